"""Tracks: a physical defect a camera with tracking saw in many frames (GET /tracks/{id}), and the
defect map along the material (GET /tracks)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import Field

from app.schemas.common import PublicModel, UtcDatetime
from app.schemas.inspections import API_PREFIX, ReviewStatus, track_position_mm
from app.vocabulary import round_box, round_confidence

if TYPE_CHECKING:
    from app.db.models import Defect, Inspection, Track


def _mm(values: tuple[float, float], mm_per_px: float | None) -> list[float] | None:
    return None if mm_per_px is None else [round(v * mm_per_px, 3) for v in values]


class TrackPublic(PublicModel):
    """One physical defect: class by vote over its frames, the best sighting (highest confidence: its
    frame is the stored image, its box the defect's box), where it lies on the material and how long
    it was in view."""

    id: int
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    defect_id: int | None = Field(description="its defect row (the review item; null once deleted)")
    review_status: ReviewStatus | None = Field(description="the defect row's review state")
    class_id: int
    class_name: str = Field(description="by vote: the class seen in most frames")
    reviewed_class_name: str | None = Field(description="the class after review, if reviewed")
    confidence: float = Field(description="of the best sighting")
    frames_seen: int
    inspection_id: int = Field(description="the inspection of the best frame")
    best_frame_uid: str
    first_frame_uid: str
    last_frame_uid: str
    started_at: UtcDatetime = Field(description="capture time of the first frame it was seen in")
    ended_at: UtcDatetime = Field(description="capture time of the last frame it was seen in")
    box: list[float] = Field(description="the best box, x1, y1, x2, y2 in the best frame's pixels")
    position_px: list[float] = Field(description="x, y of the best box's centre on the material, pixels "
                                                 "from the start of its part (along the motion: the "
                                                 "distance behind it), or from where the camera's "
                                                 "stream began without one")
    size_px: list[float] = Field(description="width, height on the material in pixels")
    position_mm: list[float] | None = Field(description="position_px in mm (null without `mm_per_px`)")
    size_mm: list[float] | None = Field(description="size_px in mm (null without `mm_per_px`)")

    @classmethod
    def fields_of(cls, row: Track, defect: Defect | None) -> dict:
        return dict(
            id=row.id, camera_id=row.camera_id, line=row.line, station=row.station, part_id=row.part_id,
            defect_id=defect.id if defect else None, review_status=defect.review_status if defect else None,
            class_id=row.class_id, class_name=row.class_name,
            reviewed_class_name=defect.reviewed_class_name if defect else None,
            confidence=round_confidence(row.confidence), frames_seen=row.frames_seen,
            inspection_id=row.inspection_id, best_frame_uid=row.best_frame_uid,
            first_frame_uid=row.first_frame_uid, last_frame_uid=row.last_frame_uid,
            started_at=row.started_at, ended_at=row.ended_at, box=round_box((row.x1, row.y1, row.x2, row.y2)),
            position_px=[round(row.position_x_px, 2), round(row.position_y_px, 2)],
            size_px=[round(row.width_px, 2), round(row.height_px, 2)], position_mm=track_position_mm(row),
            size_mm=_mm((row.width_px, row.height_px), row.mm_per_px))

    @classmethod
    def from_row(cls, row: Track, defect: Defect | None) -> TrackPublic:
        return cls(**cls.fields_of(row, defect))


class TrackFrame(PublicModel):
    """A frame a track was seen in (its inspection row, while the retention keeps it)."""

    inspection_id: int
    frame_uid: str
    captured_at: UtcDatetime
    image_url: str | None = Field(description="the stored frame, where one is kept")

    @classmethod
    def from_row(cls, row: Inspection, prefix: str = API_PREFIX) -> TrackFrame:
        return cls(inspection_id=row.id, frame_uid=row.frame_uid, captured_at=row.captured_at,
                   image_url=f"{prefix}/inspections/{row.id}/image" if row.image_path else None)


class TrackDetail(TrackPublic):
    """GET /tracks/{id}: the track and the frames it was seen in."""

    frame_uids: list[str] = Field(description="the frames it was seen in, in capture order (the first "
                                              "2000); GET /inspections/by-frame/{uid} gives each")
    frames: list[TrackFrame] = Field(description="those frames' inspections that are stored, in capture "
                                                 "order")

    @classmethod
    def from_row(cls, row: Track, defect: Defect | None,  # type: ignore[override]
                 frames: Iterable[Inspection] = ()) -> TrackDetail:
        return cls(**cls.fields_of(row, defect), frame_uids=list(row.frame_uids),
                   frames=[TrackFrame.from_row(f) for f in frames])


class TrackMap(PublicModel):
    """GET /tracks: the defect map, the tracks in the range in order of their first sighting."""

    items: list[TrackPublic]
    truncated: bool = Field(description="more tracks match than `limit`: narrow the range")
