"""The journal record layout pinned key by key, and the refusals of a broken record or a field type the
codec cannot encode (cases found by mutation testing of app/inspection/codec.py)."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

import numpy as np
import pytest

from app.detections import Detections
from app.inspection import InspectionResult, Timings, codec
from app.inspection.codec import from_record, to_record

CAPTURED = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2)))
RECEIVED = datetime(2026, 3, 4, 3, 6, 8, tzinfo=UTC)


def result() -> InspectionResult:
    dets = Detections(np.array([[1.5, 2.25, 30.125, 40.0]], np.float32), np.array([0.875], np.float32),
                      np.array([3]), ("a", "b", "c", "d"))
    return InspectionResult(
        frame_uid="f1", camera_id="cam", line=None, station="S", part_id="P", captured_at=CAPTURED,
        received_at=RECEIVED, detections=dets, verdict="NG", timings=Timings(1.0, 2.5, 3.0, 6.5),
        width=640, height=480, model_version="m1", source="camera", image=np.zeros((2, 2, 3), np.uint8),
        image_bytes=b"raw", image_ext=".png", image_path="images/x.png", image_sha256="ab" * 32)


RECORD = {
    "frame_uid": "f1", "camera_id": "cam", "line": None, "station": "S", "part_id": "P",
    "captured_at": "2026-03-04T05:06:07.890123+02:00", "received_at": "2026-03-04T03:06:08+00:00",
    "names": ["a", "b", "c", "d"], "xyxy": [[1.5, 2.25, 30.125, 40.0]], "confidence": [0.875],
    "class_id": [3], "verdict": "NG", "timings": [1.0, 2.5, 3.0, 6.5], "width": 640, "height": 480,
    "model_version": "m1", "source": "camera", "image_ext": ".png", "image_path": "images/x.png",
    "image_sha256": "ab" * 32,
    "image_size": 0, "crop_count": 0, "crop_size": 0, "image_skipped": None, "tracked": False,
}


def test_the_record_holds_every_field_but_the_image_in_its_documented_form() -> None:
    rec = to_record(result())
    assert rec == RECORD
    assert json.loads(json.dumps(rec)) == RECORD
    assert [type(v) for v in rec["timings"]] == [float] * 4


def test_the_record_reads_back_as_the_result_without_its_image() -> None:
    back = from_record(dict(RECORD))
    original = result()
    for f in fields(InspectionResult):
        if f.name in ("image", "image_bytes", "detections"):
            continue
        assert getattr(back, f.name) == getattr(original, f.name), f.name
    assert back.image is None and back.image_bytes is None
    assert back.captured_at.utcoffset() == timedelta(hours=2)
    assert back.detections.names == ("a", "b", "c", "d")
    assert back.detections.xyxy.tolist() == [[1.5, 2.25, 30.125, 40.0]]
    assert back.detections.confidence.tolist() == [0.875]
    assert back.detections.class_id.tolist() == [3]


def test_a_missing_default_field_does_not_hide_the_fields_after_it() -> None:
    back = from_record({k: v for k, v in RECORD.items() if k != "source"})
    assert (back.source, back.image_ext, back.image_path) == ("api", ".png", "images/x.png")


def test_fields_with_defaults_may_be_missing_and_the_others_may_not() -> None:
    old = {k: v for k, v in RECORD.items() if k not in ("source", "image_ext", "image_path")}
    back = from_record(old)
    assert (back.source, back.image_ext, back.image_path) == ("api", ".jpg", None)
    for required in ("frame_uid", "captured_at", "timings", "xyxy", "names", "class_id", "confidence"):
        broken = {k: v for k, v in RECORD.items() if k != required}
        with pytest.raises(KeyError):
            from_record(broken)


@pytest.mark.parametrize(
    ("hint", "kind"),
    [
        (datetime, "time"), (Timings, "timings"), (Detections, "detections"), (str, "plain"),
        (int | None, "plain"), (Literal["OK", "NG"], "plain"), (bool, "plain"), (float, "plain"),
        (type(None), "plain"),
    ],
)
def test_each_field_type_has_one_encoding(hint: object, kind: str) -> None:
    assert codec._kind("x", hint) == kind


@pytest.mark.parametrize("hint", [bytes, list[str], int | bytes, np.ndarray])
def test_a_field_type_without_an_encoding_is_refused(hint: object) -> None:
    message = (r"the journal has no encoding for InspectionResult\.x \(.*\): "
               r"give it one in app\.inspection\.codec, or list it in NOT_JOURNALED")
    with pytest.raises(TypeError, match=message):
        codec._kind("x", hint)
