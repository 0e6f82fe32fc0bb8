"""Inspections, their defects (the boxes; ``defects`` in every view) and the operator reviews of those.

Each model is built from ORM rows in one place, its ``from_row``; REST bodies, webhook payloads and CSV
rows all come from these."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from app.schemas.common import (
    TEXT,
    DatetimeInput,
    DocumentedPattern,
    LongName,
    Name,
    PublicModel,
    UtcDatetime,
    capture_time,
)
from app.vocabulary import Verdict, round_box, round_confidence, round_ms

if TYPE_CHECKING:
    from app.db.models import Defect, DefectReview, Inspection, Track

API_PREFIX = "/api/v1"
ReviewStatus = Literal["pending", "confirmed", "rejected", "reclassified"]
ReviewAction = Literal["confirm", "reject", "reclassify", "undo"]
# an audit row's action: a review (undo included), or "add" for a defect an operator drew
AuditAction = Literal["confirm", "reject", "reclassify", "undo", "add"]
DefectSource = Literal["model", "operator"]
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- reviews --------------------------------------------------------------------------------------

class ReviewBase(PublicModel):
    note: str | None = None


BoxField = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in original-image pixels")


class ReviewCreate(ReviewBase):
    """POST /defects/{id}/review."""

    model_config = ConfigDict(extra="forbid")

    action: ReviewAction = Field(description="confirm, reject, reclassify, or undo (reverts the defect's "
                                             "last action not yet undone)")
    class_name: Name | None = Field(None,
                                    description="the new class (reclassify only); must be a model class")
    box: list[float] | None = Field(None, min_length=4, max_length=4,
                                    description="corrected corners x1, y1, x2, y2 in image pixels "
                                                "(confirm or reclassify only), inside the frame")
    note: Annotated[str, TEXT] | None = Field(None, max_length=2000,
                                              description="free text; tabs and line breaks allowed")


class MissedDefectCreate(PublicModel):
    """POST /inspections/{id}/defects: a defect the model missed, drawn by an operator."""

    model_config = ConfigDict(extra="forbid")

    class_name: Name = Field(description="a model class")
    box: list[float] = BoxField
    note: Annotated[str, TEXT] | None = Field(None, max_length=2000,
                                              description="free text; tabs and line breaks allowed")


class FrameReviewCreate(PublicModel):
    """POST /inspections/{id}/review."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["complete", "reopen"] = Field(
        description="complete: the frame is fully reviewed (every box decided, every missed defect "
                    "drawn; 409 while a box is pending); reopen: it is not any more")
    note: Annotated[str, TEXT] | None = Field(None, max_length=2000,
                                              description="free text; tabs and line breaks allowed")


class ReviewPublic(ReviewBase):
    """One entry of a defect's review history (the audit trail)."""

    id: int
    action: AuditAction
    actor: str = Field(description="name of the API key that reviewed")
    before_status: str = Field(description="a review status, or absent before an operator drew the box")
    after_status: str
    before_class_name: str | None
    after_class_name: str | None
    before_box: list[float] | None = Field(None, description="the box before, where the action moved it")
    after_box: list[float] | None = Field(None, description="the box after, where the action moved it")
    undoes_review_id: int | None = Field(None, description="undo: the history entry it reverts")
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, row: DefectReview) -> ReviewPublic:
        return cls(id=row.id, actor=row.actor, action=row.action, before_status=row.before_status,
                   after_status=row.after_status, before_class_name=row.before_class_name,
                   after_class_name=row.after_class_name, before_box=row.before_box, after_box=row.after_box,
                   undoes_review_id=row.undoes_review_id, note=row.note, created_at=row.created_at)


# -- defects --------------------------------------------------------------------------------------

def track_position_mm(track: Track) -> list[float] | None:
    """Where a track's defect is on the material in mm (x, y of its best box's centre from the start of
    its part, or from where the camera's stream began without one), None without the camera's
    calibration."""
    if track.mm_per_px is None:
        return None
    return [round(track.position_x_px * track.mm_per_px, 3), round(track.position_y_px * track.mm_per_px, 3)]


class DefectBase(PublicModel):
    class_id: int
    class_name: str = Field(description="the class the detector gave")
    confidence: float
    box: list[float] = Field(min_length=4, max_length=4,
                             description="x1, y1, x2, y2 in original-image pixels")


class DefectPublic(DefectBase):
    """A detected defect and its review state."""

    CSV_SPLIT: ClassVar[dict[str, tuple[str, ...]]] = {"box": ("x1", "y1", "x2", "y2"),
                                                        "position_mm": ("position_x_mm", "position_y_mm")}

    id: int
    inspection_id: int
    review_status: ReviewStatus | None = None
    reviewed_class_id: int | None = None
    reviewed_class_name: str | None = Field(None, description="the class after review (reclassify or "
                                                                "confirm)")
    reviewed_by: str | None = None
    reviewed_at: UtcDatetime | None = None
    review_note: str | None = None
    source: DefectSource = Field("model", description="model (detected) or operator (a missed defect "
                                                       "drawn in review)")
    track_id: int | None = Field(None, description="a camera with tracking: the physical defect's track "
                                                   "(GET /tracks/{id}); its box is the best sighting's")
    frames_seen: int | None = Field(None, description="a camera with tracking: frames the defect was "
                                                      "seen in")
    position_mm: list[float] | None = Field(
        None, min_length=2, max_length=2,
        description="a camera with tracking and a calibration (`mm_per_px`): x, y of the defect on the "
                    "material in mm, from the start of its part (docs/cameras.md, \"Parts under a "
                    "camera\"), or from where the camera's stream began without one")

    @classmethod
    def fields_of(cls, row: Defect) -> dict[str, Any]:
        track = row.track
        return dict(
            track_id=row.track_id, frames_seen=track.frames_seen if track is not None else None,
            position_mm=track_position_mm(track) if track is not None else None,
            source=row.source or "model",
            id=row.id, inspection_id=row.inspection_id, class_id=row.class_id, class_name=row.class_name,
            confidence=round_confidence(row.confidence), box=round_box((row.x1, row.y1, row.x2, row.y2)),
            review_status=row.review_status, reviewed_class_id=row.reviewed_class_id,
            reviewed_class_name=row.reviewed_class_name, reviewed_by=row.reviewed_by,
            reviewed_at=row.reviewed_at, review_note=row.review_note,
        )

    @classmethod
    def from_row(cls, row: Defect) -> DefectPublic:
        return cls(**cls.fields_of(row))


class DefectInContext(DefectPublic):
    """A defect with where and when it was seen: the items of GET /defects and its CSV rows."""

    captured_at: UtcDatetime
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    verdict: Verdict

    @classmethod
    def context_of(cls, inspection: Inspection) -> dict[str, Any]:
        return dict(captured_at=inspection.captured_at, camera_id=inspection.camera_id, line=inspection.line,
                    station=inspection.station, part_id=inspection.part_id, verdict=inspection.verdict)

    @classmethod
    def from_rows(cls, row: Defect, inspection: Inspection) -> DefectInContext:
        return cls(**cls.fields_of(row), **cls.context_of(inspection))


# -- inspections ----------------------------------------------------------------------------------

class TimingsPublic(BaseModel):
    """Stage times of one inspection in milliseconds."""

    decode: float
    inference: float
    postprocess: float
    total: float

    @classmethod
    def from_row(cls, row: Inspection) -> TimingsPublic:
        return cls(decode=round_ms(row.decode_ms), inference=round_ms(row.inference_ms),
                   postprocess=round_ms(row.postprocess_ms), total=round_ms(row.total_ms))


class InspectionBase(PublicModel):
    """Where a frame comes from: set by the camera's configuration or by the uploader."""

    camera_id: str | None = None
    line: str | None = None
    station: str | None = None
    part_id: str | None = None


class InspectionCreate(InspectionBase):
    """POST /inspections: form fields (multipart) or query parameters (raw image body)."""

    camera_id: Name | None = None
    line: Name | None = None
    station: Name | None = None
    part_id: LongName | None = None
    captured_at: DatetimeInput | None = Field(
        None, description="not before 2000-01-01, not more than a day ahead of the server's clock "
                          "(default: now)")
    frame_uid: Annotated[str, DocumentedPattern(SAFE_ID.pattern)] | None = Field(
        None, description="idempotency key: a replay with the same image returns the stored row; another "
                          "image under a stored uid is a 409 problem")
    imgsz: int | None = Field(None, ge=32, le=4096, description="the longer side of the model input the "
                              "frame is seen at (free-size models; default the model's own)")

    @field_validator("captured_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return capture_time(value)

    @field_validator("frame_uid")
    @classmethod
    def _safe_uid(cls, value: str | None) -> str | None:
        if value is not None and not SAFE_ID.match(value):
            raise ValueError("frame_uid must be 1-64 characters of A-Z a-z 0-9 _ -")
        return value


class InspectionAccepted(PublicModel):
    """202: the frame is inspected and kept in the on-disk journal while the database is away; it is
    stored once the database answers again. GET ``result_url`` gives the inspection then (200), 202
    with this body until then."""

    frame_uid: str
    status: Literal["pending"] = "pending"
    result_url: str = Field(description="GET it for the stored inspection once the database is back")

    @classmethod
    def of(cls, frame_uid: str, prefix: str = API_PREFIX) -> InspectionAccepted:
        return cls(frame_uid=frame_uid, result_url=f"{prefix}/inspections/by-frame/{frame_uid}")


class InspectionPublic(InspectionBase):
    """One inspected frame: its verdict, its defects and how long each stage took."""

    CSV_SPLIT: ClassVar[dict[str, tuple[str, ...]]] = {
        "timings_ms": ("decode_ms", "inference_ms", "postprocess_ms", "total_ms")}

    id: int
    frame_uid: str
    verdict: Verdict
    defect_count: int
    source: str = Field(description="api (uploaded) or stream (a camera)")
    captured_at: UtcDatetime
    received_at: UtcDatetime
    model_version: str
    width: int
    height: int
    has_image: bool
    image_url: str | None = Field(None, description="the stored frame, where one is kept")
    image_expired: bool = Field(
        False, description="the frame was stored and later deleted by the retention policy "
                           "(`has_image` is then false; the image route answers 410 `expired`)")
    timings_ms: TimingsPublic
    fully_reviewed_at: UtcDatetime | None = Field(None, description="when an operator marked the frame "
                                                  "fully reviewed (every box decided, misses drawn)")
    fully_reviewed_by: str | None = None
    defects: list[DefectPublic]

    @classmethod
    def fields_of(cls, row: Inspection, defects: Iterable[Defect] | None = None,
                  prefix: str = API_PREFIX) -> dict[str, Any]:
        boxes = row.defects if defects is None else defects
        return dict(
            id=row.id, frame_uid=row.frame_uid, verdict=row.verdict, defect_count=row.defect_count,
            camera_id=row.camera_id, line=row.line, station=row.station, part_id=row.part_id,
            source=row.source, captured_at=row.captured_at, received_at=row.received_at,
            model_version=row.model_version, width=row.width, height=row.height,
            has_image=bool(row.image_path),
            image_url=f"{prefix}/inspections/{row.id}/image" if row.image_path else None,
            image_expired=row.image_expired_at is not None,
            timings_ms=TimingsPublic.from_row(row), fully_reviewed_at=row.fully_reviewed_at,
            fully_reviewed_by=row.fully_reviewed_by, defects=[DefectPublic.from_row(d) for d in boxes],
        )

    @classmethod
    def from_row(cls, row: Inspection, defects: Iterable[Defect] | None = None,
                 prefix: str = API_PREFIX) -> InspectionPublic:
        """``defects``: the boxes to show, when not ``row.defects`` (the CSV view passes none)."""
        return cls(**cls.fields_of(row, defects, prefix))


class InspectionDetail(InspectionPublic):
    """An inspection as POST /inspections and GET /inspections/{id} answer it: with the deprecated
    ``detections``, the former name of ``defects`` (removed in the next release)."""

    @computed_field(description="Deprecated: the same list as defects; removed in the next release",
                    json_schema_extra={"deprecated": True})  # type: ignore[prop-decorator]
    @property
    def detections(self) -> list[DefectPublic]:
        return self.defects

    @classmethod
    def from_row(cls, row: Inspection, defects: Iterable[Defect] | None = None,
                 prefix: str = API_PREFIX) -> InspectionDetail:
        return cls(**cls.fields_of(row, defects, prefix))


class InspectionCreated(InspectionDetail):
    """The answer of POST /inspections: the stored inspection, and whether its image was written."""

    image_stored: bool = Field(description="the frame was written to the image store")
    image_skipped: Literal["low_disk", "write_failed"] | None = Field(
        None, description="why a frame the image policy keeps was not written: `low_disk` (free space "
                          "below INSPECT_DISK_FLOOR_MB) or `write_failed` (full disk, read-only data "
                          "folder); the inspection is stored either way")

    @classmethod
    def of(cls, row: Inspection, image_skipped: str | None) -> InspectionCreated:
        return cls(**cls.fields_of(row), image_stored=bool(row.image_path), image_skipped=image_skipped)


class DefectDetail(DefectInContext):
    """GET /defects/{id} and the answer of a review: the defect, its inspection and its history."""

    inspection: InspectionPublic
    history: list[ReviewPublic]

    @classmethod
    def from_row(cls, row: Defect) -> DefectDetail:  # type: ignore[override]
        return cls(**cls.fields_of(row), **cls.context_of(row.inspection),
                   inspection=InspectionPublic.from_row(row.inspection),
                   history=[ReviewPublic.from_row(r) for r in row.reviews])


# -- lists ----------------------------------------------------------------------------------------

class PageBase(PublicModel):
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")
    limit: int
    sort: Literal["captured_at", "id"]
    order: Literal["asc", "desc"]


class InspectionPage(PageBase):
    items: list[InspectionPublic]


class DefectPage(PageBase):
    items: list[DefectInContext]


class PartStation(PublicModel):
    """The latest inspection of a part at one station (camera where no station is set)."""

    line: str | None
    station: str | None
    camera_id: str | None
    verdict: Verdict = Field(description="the latest inspection's; NG if any frame a camera streamed of "
                                         "the part is NG")
    inspections: int = Field(description="how often the part was inspected here (a camera: its frames)")
    latest: InspectionPublic


class PartPublic(PublicModel):
    """A part across all stations: NG if any station's verdict is NG."""

    part_id: str
    verdict: Verdict
    inspections: int
    stations: list[PartStation]
    tracked_defects: int = Field(0, description="physical defects cameras with tracking saw on the part; "
                                                "where they lie: GET /tracks?part_id= (the defect map)")
