"""Initial schema: cameras, inspections, defects, defect_reviews, api_keys, webhooks,
webhook_deliveries (exactly app/db/models.py at the time of writing).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def big_id() -> sa.types.TypeEngine:
    """BIGINT on PostgreSQL, INTEGER on SQLite (which only auto-increments INTEGER PRIMARY KEY)."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("station", sa.String(64), nullable=True),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("created_at", tz(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cameras_line", "cameras", ["line"])

    op.create_table(
        "inspections",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("frame_uid", sa.String(64), nullable=False),
        sa.Column("camera_id", sa.String(64), nullable=True),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("station", sa.String(64), nullable=True),
        sa.Column("part_id", sa.String(128), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("captured_at", tz(), nullable=False),
        sa.Column("received_at", tz(), nullable=False),
        sa.Column("verdict", sa.String(2), nullable=False),
        sa.Column("defect_count", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("image_path", sa.String(512), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("decode_ms", sa.Float(), nullable=False),
        sa.Column("inference_ms", sa.Float(), nullable=False),
        sa.Column("postprocess_ms", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["camera_id"], ["cameras.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("frame_uid"),
    )
    op.create_index("ix_inspections_captured_at", "inspections", ["captured_at"])
    op.create_index("ix_inspections_camera_captured", "inspections", ["camera_id", "captured_at"])
    op.create_index("ix_inspections_verdict_captured", "inspections", ["verdict", "captured_at"])
    op.create_index("ix_inspections_part_id", "inspections", ["part_id"])
    op.create_index("ix_inspections_line_captured", "inspections", ["line", "captured_at"])

    op.create_table(
        "defects",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("inspection_id", big_id(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.Column("review_status", sa.String(16), nullable=False),
        sa.Column("reviewed_class_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_class_name", sa.String(64), nullable=True),
        sa.Column("reviewed_by", sa.String(128), nullable=True),
        sa.Column("reviewed_at", tz(), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["inspection_id"], ["inspections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_defects_inspection_id", "defects", ["inspection_id"])
    op.create_index("ix_defects_class_name", "defects", ["class_name"])
    op.create_index("ix_defects_review_status", "defects", ["review_status"])

    op.create_table(
        "defect_reviews",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("defect_id", big_id(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("before_status", sa.String(16), nullable=False),
        sa.Column("after_status", sa.String(16), nullable=False),
        sa.Column("before_class_name", sa.String(64), nullable=True),
        sa.Column("after_class_name", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", tz(), nullable=False),
        sa.ForeignKeyConstraint(["defect_id"], ["defects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_defect_reviews_defect_id", "defect_reviews", ["defect_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("created_at", tz(), nullable=False),
        sa.Column("last_used_at", tz(), nullable=True),
        sa.Column("revoked_at", tz(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])

    op.create_table(
        "webhooks",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", tz(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("webhook_id", big_id(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", tz(), nullable=False),
        sa.Column("next_attempt_at", tz(), nullable=False),
        sa.Column("delivered_at", tz(), nullable=True),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id"])
    op.create_index("ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    # Children first; dropping a table drops its indexes.
    for table in ("webhook_deliveries", "webhooks", "api_keys", "defect_reviews", "defects",
                  "inspections", "cameras"):
        op.drop_table(table)
