"""Review by frame: a defect's source (model or operator, for a drawn missed defect), the box before and
after a correction and the row an undo reverts in the review audit, a frame's "fully reviewed" state and
its audit table frame_reviews; alarms raised by the cameras file's rules, with their acknowledgement.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def big_id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("defects") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="model"))
    with op.batch_alter_table("defect_reviews") as batch:
        batch.add_column(sa.Column("before_box", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("after_box", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("undoes_review_id", big_id(), nullable=True))
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("fully_reviewed_at", tz(), nullable=True))
        batch.add_column(sa.Column("fully_reviewed_by", sa.String(128), nullable=True))
    op.create_table(
        "frame_reviews",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("inspection_id", big_id(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("fully_reviewed", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", tz(), nullable=False),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_frame_reviews_inspection_id", "frame_reviews", ["inspection_id"])
    op.create_table(
        "alarms",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("condition", sa.String(32), nullable=False),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("camera_id", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("limit", sa.Float(), nullable=False),
        sa.Column("raised_at", tz(), nullable=False),
        sa.Column("acknowledged_at", tz(), nullable=True),
        sa.Column("acknowledged_by", sa.String(128), nullable=True),
        sa.Column("acknowledge_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alarms_rule_acknowledged", "alarms", ["rule_id", "acknowledged_at"])


def downgrade() -> None:
    op.drop_index("ix_alarms_rule_acknowledged", table_name="alarms")
    op.drop_table("alarms")
    op.drop_index("ix_frame_reviews_inspection_id", table_name="frame_reviews")
    op.drop_table("frame_reviews")
    with op.batch_alter_table("inspections") as batch:
        batch.drop_column("fully_reviewed_by")
        batch.drop_column("fully_reviewed_at")
    with op.batch_alter_table("defect_reviews") as batch:
        batch.drop_column("undoes_review_id")
        batch.drop_column("after_box")
        batch.drop_column("before_box")
    with op.batch_alter_table("defects") as batch:
        batch.drop_column("source")
