"""Tracks: one row per physical defect a camera with tracking saw in many frames, and the defect row
that stands for it (``defects.track_id``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tracks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("track_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("camera_id", sa.String(64), sa.ForeignKey("cameras.id"), nullable=True),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("station", sa.String(64), nullable=True),
        sa.Column("part_id", sa.String(128), nullable=True),
        sa.Column("inspection_id", BigId, sa.ForeignKey("inspections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("track_number", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("class_name", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("frames_seen", sa.Integer(), nullable=False),
        sa.Column("first_frame_uid", sa.String(64), nullable=False),
        sa.Column("best_frame_uid", sa.String(64), nullable=False),
        sa.Column("last_frame_uid", sa.String(64), nullable=False),
        sa.Column("frame_uids", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=False)
          for name in ("x1", "y1", "x2", "y2", "position_x_px", "position_y_px", "width_px", "height_px")),
        sa.Column("mm_per_px", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tracks_camera_started", "tracks", ["camera_id", "started_at"])
    op.create_index("ix_tracks_part_id", "tracks", ["part_id"])
    op.create_index("ix_tracks_inspection_id", "tracks", ["inspection_id"])
    with op.batch_alter_table("defects") as batch:
        batch.add_column(sa.Column("track_id", BigId, nullable=True))
        batch.create_foreign_key("fk_defects_track_id_tracks", "tracks", ["track_id"], ["id"],
                                 ondelete="SET NULL")
    op.create_index("ix_defects_track_id", "defects", ["track_id"])


def downgrade() -> None:
    op.drop_index("ix_defects_track_id", table_name="defects")
    with op.batch_alter_table("defects") as batch:
        batch.drop_constraint("fk_defects_track_id_tracks", type_="foreignkey")
        batch.drop_column("track_id")
    op.drop_index("ix_tracks_inspection_id", table_name="tracks")
    op.drop_index("ix_tracks_part_id", table_name="tracks")
    op.drop_index("ix_tracks_camera_started", table_name="tracks")
    op.drop_table("tracks")
