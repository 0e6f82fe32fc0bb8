"""SQLAlchemy 2 typed models of the defect log. Every change here needs an Alembic migration
(``app/db/migrations``); a test checks that autogenerate finds nothing missing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from app.vocabulary import utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

REVIEW_STATUSES = ("pending", "confirmed", "rejected", "reclassified")
DEFECT_SOURCES = ("model", "operator")  # found by the detector, or drawn by an operator (a missed defect)
ROLES = ("camera", "mes", "operator", "admin")


class Base(DeclarativeBase):
    pass


class Camera(Base):
    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[str | None] = mapped_column(String(64), index=True)
    station: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Inspection(Base):
    __tablename__ = "inspections"
    __table_args__ = (
        Index("ix_inspections_captured_at", "captured_at"),
        Index("ix_inspections_camera_captured", "camera_id", "captured_at"),
        Index("ix_inspections_verdict_captured", "verdict", "captured_at"),
        Index("ix_inspections_part_id", "part_id"),
        Index("ix_inspections_line_captured", "line", "captured_at"),
        # the pruner's walk, oldest first, over the rows that still have files
        Index("ix_inspections_images_captured", "captured_at", "id",
              sqlite_where=text("image_path IS NOT NULL OR crop_count > 0"),
              postgresql_where=text("image_path IS NOT NULL OR crop_count > 0")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Idempotency key: a journal replay or a retried upload with the same uid is stored once.
    frame_uid: Mapped[str] = mapped_column(String(64), unique=True)
    camera_id: Mapped[str | None] = mapped_column(ForeignKey("cameras.id"))
    line: Mapped[str | None] = mapped_column(String(64))
    station: Mapped[str | None] = mapped_column(String(64))
    part_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | stream
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    verdict: Mapped[str] = mapped_column(String(2))
    defect_count: Mapped[int] = mapped_column(Integer, default=0)
    model_version: Mapped[str] = mapped_column(String(128))
    image_path: Mapped[str | None] = mapped_column(String(512))
    # SHA-256 (hex) of the image as it came in: the uploaded file's bytes, or a camera frame's pixels
    # (``app.inspection.rules.image_digest``); a repeated frame_uid with another digest is a conflict.
    # NULL for rows stored before the column existed.
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    # bytes on disk (whole 4 KiB blocks) of the frame file, and the defect crop files next to it
    image_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    crop_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    crop_size: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # set when the retention policy deleted the frame (image_path is then NULL): the image "expired"
    image_expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    decode_ms: Mapped[float] = mapped_column(Float, default=0.0)
    inference_ms: Mapped[float] = mapped_column(Float, default=0.0)
    postprocess_ms: Mapped[float] = mapped_column(Float, default=0.0)
    total_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # The frame's review state: set when an operator has decided every box and drawn every missed
    # defect ("fully reviewed"); the miss rate is counted over these frames only.
    fully_reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fully_reviewed_by: Mapped[str | None] = mapped_column(String(128))

    camera: Mapped[Camera | None] = relationship()
    defects: Mapped[list[Defect]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", order_by="Defect.id"
    )


class Defect(Base):
    __tablename__ = "defects"
    __table_args__ = (
        Index("ix_defects_inspection_id", "inspection_id"),
        Index("ix_defects_class_name", "class_name"),
        Index("ix_defects_review_status", "review_status"),
        Index("ix_defects_track_id", "track_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    class_id: Mapped[int] = mapped_column(Integer)
    class_name: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    review_status: Mapped[str] = mapped_column(String(16), default="pending")
    reviewed_class_id: Mapped[int | None] = mapped_column(Integer)
    reviewed_class_name: Mapped[str | None] = mapped_column(String(64))
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_note: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="model", server_default="model")
    # a camera with tracking: the physical defect this row stands for (its best sighting is the box)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"))

    inspection: Mapped[Inspection] = relationship(back_populates="defects")
    track: Mapped[Track | None] = relationship(lazy="selectin")
    reviews: Mapped[list[DefectReview]] = relationship(
        back_populates="defect", cascade="all, delete-orphan", order_by="DefectReview.id"
    )


class Track(Base):
    """One physical defect a camera with tracking saw in many frames. Its defect row (``defects.track_id``)
    sits on the inspection of the best frame (``inspection_id``: the highest confidence, whose image and
    crop are kept); the other frames keep their inspection rows (verdict, counts) and are named in
    ``frame_uids``. Positions are along the material: pixels (and mm with the camera's calibration)
    from the start of its part (``part_id``), or from where the camera's stream began without one."""

    __tablename__ = "tracks"
    __table_args__ = (
        Index("ix_tracks_camera_started", "camera_id", "started_at"),
        Index("ix_tracks_part_id", "part_id"),
        Index("ix_tracks_inspection_id", "inspection_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # idempotency key (camera, first frame, first box): a replay or a re-read stores the track once
    track_uid: Mapped[str] = mapped_column(String(64), unique=True)
    camera_id: Mapped[str | None] = mapped_column(ForeignKey("cameras.id"))
    line: Mapped[str | None] = mapped_column(String(64))
    station: Mapped[str | None] = mapped_column(String(64))
    part_id: Mapped[str | None] = mapped_column(String(128))
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    track_number: Mapped[int] = mapped_column(Integer)  # the tracker's number within its run
    class_id: Mapped[int] = mapped_column(Integer)  # by vote over the frames
    class_name: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float)  # of the best sighting
    frames_seen: Mapped[int] = mapped_column(Integer)
    first_frame_uid: Mapped[str] = mapped_column(String(64))
    best_frame_uid: Mapped[str] = mapped_column(String(64))
    last_frame_uid: Mapped[str] = mapped_column(String(64))
    frame_uids: Mapped[list] = mapped_column(JSON)  # the frames it was seen in (the first 2000)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # capture time, first frame
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # capture time, last frame
    x1: Mapped[float] = mapped_column(Float)  # the best box, in the best frame's pixels
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    position_x_px: Mapped[float] = mapped_column(Float)  # the best box's centre on the material
    position_y_px: Mapped[float] = mapped_column(Float)
    width_px: Mapped[float] = mapped_column(Float)
    height_px: Mapped[float] = mapped_column(Float)
    mm_per_px: Mapped[float | None] = mapped_column(Float)  # the camera's calibration; None: pixels only
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DefectReview(Base):
    """Audit trail: one row per review action, never updated."""

    __tablename__ = "defect_reviews"
    __table_args__ = (Index("ix_defect_reviews_defect_id", "defect_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    defect_id: Mapped[int] = mapped_column(ForeignKey("defects.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))  # confirm | reject | reclassify | add | undo
    before_status: Mapped[str] = mapped_column(String(16))
    after_status: Mapped[str] = mapped_column(String(16))
    before_class_name: Mapped[str | None] = mapped_column(String(64))
    after_class_name: Mapped[str | None] = mapped_column(String(64))
    # x1, y1, x2, y2 before and after, where the action moved the box (a corrected box, an undo of one)
    before_box: Mapped[list | None] = mapped_column(JSON)
    after_box: Mapped[list | None] = mapped_column(JSON)
    undoes_review_id: Mapped[int | None] = mapped_column(BigId)  # action undo: the row it reverts
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    defect: Mapped[Defect] = relationship(back_populates="reviews")


class FrameReview(Base):
    """Audit trail of a frame's review state: one row per complete / reopen / undo, never updated."""

    __tablename__ = "frame_reviews"
    __table_args__ = (Index("ix_frame_reviews_inspection_id", "inspection_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))  # complete | reopen
    fully_reviewed: Mapped[bool] = mapped_column(Boolean)  # the state after the action
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alarm(Base):
    """An alarm raised by a rule of the cameras file; it stays raised until an operator acknowledges it
    (who and when are kept: the audit)."""

    __tablename__ = "alarms"
    __table_args__ = (Index("ix_alarms_rule_acknowledged", "rule_id", "acknowledged_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    condition: Mapped[str] = mapped_column(String(32))  # one of app.ingest.config.ALARM_CONDITIONS
    line: Mapped[str | None] = mapped_column(String(64))
    camera_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float] = mapped_column(Float)  # what was measured when it fired
    limit: Mapped[float] = mapped_column(Float)  # the rule's limit
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    acknowledge_note: Mapped[str | None] = mapped_column(Text)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: never


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(1024))
    events: Mapped[list] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
