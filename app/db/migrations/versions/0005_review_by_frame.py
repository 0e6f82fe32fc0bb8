"""Review by frame: a defect's source (model or operator, for a drawn missed defect), the box before and
after a correction and the row an undo reverts in the review audit, a frame's "fully reviewed" state and
its audit table frame_reviews.

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0001"
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


def downgrade() -> None:
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
