"""Retention: the size of each stored frame and its crops, when a frame expired, and the pruner's
index over the rows that still have files.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HAS_FILES = "image_path IS NOT NULL OR crop_count > 0"


def upgrade() -> None:
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("image_size", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("crop_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("crop_size", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("image_expired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_inspections_images_captured", "inspections", ["captured_at", "id"],
                    sqlite_where=sa.text(HAS_FILES), postgresql_where=sa.text(HAS_FILES))


def downgrade() -> None:
    op.drop_index("ix_inspections_images_captured", table_name="inspections")
    with op.batch_alter_table("inspections") as batch:
        batch.drop_column("image_expired_at")
        batch.drop_column("crop_size")
        batch.drop_column("crop_count")
        batch.drop_column("image_size")
