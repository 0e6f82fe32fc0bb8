"""Which image of a result is stored and where, crops, and the refusals of persist_results (cases found
by mutation testing of app/inspection/store.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.detections import Detections
from app.inspection import CameraContext, inspect_frame
from app.inspection.store import (
    Stored,
    apply_image_policy,
    crop_file,
    image_file,
    persist_results,
    write_crops,
    write_image_now,
)

FRAME = np.full((8, 8, 3), 128, np.uint8)
WHEN = datetime(2026, 7, 8, 9, 10, tzinfo=UTC)
NG_DETS = Detections(np.array([[1, 1, 4, 4]], np.float32), [0.9], [0], ("crazing",))


def result(ng: bool, image_bytes: bytes | None = None, ext: str = ".jpg"):
    return inspect_frame(FRAME, NG_DETS if ng else Detections.empty(("crazing",)), model_version="m",
                         frame_uid="f1", captured_at=WHEN, image_bytes=image_bytes, image_ext=ext)


def test_the_policy_skips_or_keeps_the_upload_and_always_drops_the_frame() -> None:
    r = result(ng=False, image_bytes=b"png", ext=".png")
    apply_image_policy(r, "ng")
    assert (r.image, r.image_bytes, r.image_ext) == (None, None, ".png")
    r = result(ng=True, image_bytes=b"png", ext=".png")
    apply_image_policy(r, "ng")
    assert (r.image, r.image_bytes, r.image_ext) == (None, b"png", ".png")


def test_a_frame_without_an_upload_is_stored_as_jpeg() -> None:
    r = result(ng=False, ext=".png")
    apply_image_policy(r, "always")
    assert r.image is None and r.image_bytes[:2] == b"\xff\xd8" and r.image_ext == ".jpg"
    r = result(ng=False)
    r.image = None  # decided before: nothing to encode
    apply_image_policy(r, "always")
    assert r.image_bytes is None


def test_files_are_named_by_day_and_frame() -> None:
    r = result(ng=True, ext=".png")
    assert image_file(r) == "images/2026/07/08/f1.png"
    assert crop_file(r, 0) == "images/2026/07/08/f1-crop0.jpg"
    assert crop_file(r, 3) == "images/2026/07/08/f1-crop3.jpg"


def test_write_image_now_writes_the_bytes_and_names_the_file(tmp_path: Path) -> None:
    r = result(ng=True, image_bytes=b"raw", ext=".png")
    r.image = None
    write_image_now(r, tmp_path)
    assert r.image_path == "images/2026/07/08/f1.png" and r.image_bytes is None
    assert (tmp_path / r.image_path).read_bytes() == b"raw"
    write_image_now(r, tmp_path)  # nothing left to write: unchanged
    assert r.image_path == "images/2026/07/08/f1.png"
    none = result(ng=True)
    none.image = None
    write_image_now(none, tmp_path)
    assert none.image_path is None


def test_crops_are_written_in_order_and_a_failing_one_is_logged(tmp_path: Path, caplog) -> None:
    r = result(ng=True)
    write_crops(r, [b"c0", b"c1"], tmp_path)
    assert (tmp_path / crop_file(r, 0)).read_bytes() == b"c0"
    assert (tmp_path / crop_file(r, 1)).read_bytes() == b"c1"
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "images").write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, logger="app.inspection.store"):
        write_crops(r, [b"c0", b"c1"], blocked)
    messages = [rec.getMessage() for rec in caplog.records]
    assert len(messages) == 2
    for k, message in enumerate(messages):
        prefix = f"cannot store crop {crop_file(r, k)}: "
        assert message.startswith(prefix) and message.removeprefix(prefix) not in ("", "None")


def test_a_row_stored_without_loading_says_so() -> None:
    with pytest.raises(LookupError, match=r"^inspection 7 was stored without loading its row "
                                          r"\(load_rows=False\)$"):
        _ = Stored(7, True).row
    assert Stored(7, True).loaded is None


def test_persist_refuses_results_whose_image_policy_was_not_applied(tmp_path: Path) -> None:
    results = [result(ng=True) for _ in range(4)]
    for k, r in enumerate(results):
        r.frame_uid = f"f{k}"
    with pytest.raises(ValueError, match=r"^no image policy was applied to \['f0', 'f1', 'f2'\] "
                                         r"\(apply_image_policy first\)$"):
        persist_results(None, results, data_dir=tmp_path)  # type: ignore[arg-type]


def test_a_result_without_a_path_or_bytes_is_not_written(tmp_path: Path) -> None:
    from app.inspection.store import _write_image

    r = result(ng=True, image_bytes=b"raw")
    message = r"^inspection 'f1' carries no image to write$"
    with pytest.raises(ValueError, match=message):
        _write_image(r, tmp_path)  # bytes but no path
    r.image_path, r.image_bytes = "images/x.jpg", None
    with pytest.raises(ValueError, match=message):
        _write_image(r, tmp_path)  # a path but no bytes


def test_stored_results_are_counted_by_verdict_camera_and_class(database_url: str, tmp_path: Path) -> None:
    from app import metrics
    from app.db.session import Database

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    ng = inspect_frame(FRAME, Detections(np.array([[1, 1, 4, 4], [2, 2, 5, 5]], np.float32), [0.9, 0.8],
                                         [0, 0], ("mut-class",)), model_version="m", frame_uid="mut-ng")
    ok = inspect_frame(FRAME, Detections.empty(("mut-class",)), model_version="m", frame_uid="mut-ok",
                       context=CameraContext(camera_id="mut-cam"))
    metrics.CAMERA_LABELS.register("mut-cam")  # a configured camera: its own label, whatever the cap
    before = (sample("inspect_inspections_total", verdict="NG", camera=""),
              sample("inspect_inspections_total", verdict="OK", camera="mut-cam"),
              sample("inspect_defects_total", class_name="mut-class"))
    db = Database(database_url)
    try:
        with db.session() as session:
            persist_results(session, [ng, ok], data_dir=tmp_path, image_policy="never")
    finally:
        db.dispose()
    after = (sample("inspect_inspections_total", verdict="NG", camera=""),
             sample("inspect_inspections_total", verdict="OK", camera="mut-cam"),
             sample("inspect_defects_total", class_name="mut-class"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2]
