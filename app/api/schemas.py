"""Response bodies of the inspection API (shared with the MES routes)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from app.db.models import Inspection


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class DetectionOut(BaseModel):
    id: int | None = None
    class_id: int
    class_name: str
    confidence: float
    box: list[float]  # x1, y1, x2, y2 in original-image pixels
    review_status: str | None = None


class TimingsOut(BaseModel):
    decode: float
    inference: float
    postprocess: float
    total: float


class InspectionOut(BaseModel):
    id: int
    frame_uid: str
    verdict: str
    detections: list[DetectionOut]
    timings_ms: TimingsOut
    model_version: str
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    source: str
    captured_at: datetime
    received_at: datetime
    width: int
    height: int
    image_url: str | None = None

    @classmethod
    def from_row(cls, row: Inspection, prefix: str = "/api/v1") -> InspectionOut:
        return cls(
            id=row.id, frame_uid=row.frame_uid, verdict=row.verdict,
            detections=[DetectionOut(id=d.id, class_id=d.class_id, class_name=d.class_name,
                                     confidence=round(d.confidence, 5),
                                     box=[round(d.x1, 2), round(d.y1, 2), round(d.x2, 2), round(d.y2, 2)],
                                     review_status=d.review_status)
                        for d in row.defects],
            timings_ms=TimingsOut(decode=round(row.decode_ms, 3), inference=round(row.inference_ms, 3),
                                  postprocess=round(row.postprocess_ms, 3), total=round(row.total_ms, 3)),
            model_version=row.model_version, camera_id=row.camera_id, line=row.line, station=row.station,
            part_id=row.part_id, source=row.source, captured_at=as_utc(row.captured_at),
            received_at=as_utc(row.received_at), width=row.width, height=row.height,
            image_url=f"{prefix}/inspections/{row.id}/image" if row.image_path else None,
        )


class ModelOut(BaseModel):
    path: str
    version: str
    names: list[str]
    imgsz: list[int]
    layout: str | None
    provider: str
    providers: list[str]
    available_providers: list[str]
    input_shape: list[int | str]
    quantization: str | None
    stride: list[int]
