"""Which image of a result is stored and where, crops, and the refusals of persist_results (cases found
by mutation testing of app/inspection/store.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, select, update

from app import images
from app.db.models import Inspection, Webhook, WebhookDelivery
from app.db.session import Database
from app.detections import Detections
from app.inspection import CameraContext, inspect_frame
from app.inspection.store import (
    FrameUidConflict,
    Stored,
    apply_image_policy,
    crop_file,
    image_file,
    persist_results,
    skip_image_if_unwritable,
    write_crops,
    write_image_now,
)
from app.storage_health import HEALTH, DatabaseFileGone

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


def test_crops_are_written_in_order_and_a_failing_one_is_logged_and_holds_writes(tmp_path: Path,
                                                                                  caplog) -> None:
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
    assert len(messages) == 1  # the first failure stops the others: image writes are held a moment
    prefix = f"cannot store crop {crop_file(r, 0)}: "
    assert messages[0].startswith(prefix) and messages[0].removeprefix(prefix) not in ("", "None")
    assert HEALTH.image_skip_reason(tmp_path) == "write_failed"


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


# -- one frame_uid, one image -----------------------------------------------------------------------

@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data folder: beside the test's SQLite file, so the files in it are the images alone."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


def upload(uid: str, image: bytes, camera: str | None = None):
    """A result as the REST door makes it: NG, with its uploaded bytes (digest of those bytes)."""
    context = CameraContext(camera_id=camera) if camera else None
    return inspect_frame(FRAME, NG_DETS, model_version="m", frame_uid=uid, captured_at=WHEN,
                         image_bytes=image, image_ext=".png", context=context)


def stored_rows(db) -> list[tuple]:
    with db.session() as s:
        return [(r.frame_uid, r.image_path, r.image_size, r.crop_count, r.crop_size, r.image_sha256)
                for r in s.scalars(select(Inspection).order_by(Inspection.frame_uid))]


def stored_files(data_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(data_dir).as_posix(): p.read_bytes()
            for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_a_repeated_uid_with_another_image_is_refused_and_nothing_of_its_batch_is_written(db,
                                                                                        data: Path):
    with db.session() as s:
        [first] = persist_results(s, [upload("u1", b"one")], data_dir=data, image_policy="always")
    before = (stored_rows(db), stored_files(data))
    clash, fresh = upload("u1", b"two"), upload("u2", b"new")
    with db.session() as s, pytest.raises(FrameUidConflict) as refused:
        persist_results(s, [fresh, clash], data_dir=data, image_policy="always")
    assert str(refused.value) == (f"frame_uid 'u1' (inspection {first.id}) is already stored with a "
                                  "different image; a replay must carry the same image, a new frame needs a "
                                  "new frame_uid")
    assert refused.value.results == [clash] and refused.value.stored == {"u1": first.id}
    assert refused.value.reason == "frame-uid-conflict"
    assert (stored_rows(db), stored_files(data)) == before
    assert before[1] == {"images/2026/07/08/u1.png": b"one"}
    with db.session() as s:  # the same image again: a replay, its stored row back, nothing written
        [again] = persist_results(s, [upload("u1", b"one")], data_dir=data, image_policy="always")
        assert (again.id, again.created) == (first.id, False)
        assert again.row.image_path == "images/2026/07/08/u1.png"
    assert (stored_rows(db), stored_files(data)) == before


def test_one_uid_twice_in_a_batch_is_a_replay_with_the_same_image_and_refused_with_another(db,
                                                                                          data: Path):
    a, b = upload("u1", b"one"), upload("u1", b"two")
    with db.session() as s, pytest.raises(FrameUidConflict) as refused:
        persist_results(s, [a, b], data_dir=data, image_policy="always")
    assert str(refused.value).startswith("frame_uid 'u1' is already stored with a different image; ")
    assert refused.value.results == [b] and refused.value.stored == {}
    assert stored_rows(db) == [] and stored_files(data) == {}
    with db.session() as s:
        first, second = persist_results(s, [upload("u1", b"one"), upload("u1", b"one")], data_dir=data,
                                        image_policy="always")
    assert (first.created, second.created, second.id) == (True, False, first.id)
    assert stored_files(data) == {"images/2026/07/08/u1.png": b"one"}


def test_a_conflict_names_three_uids_and_counts_the_rest(db, data: Path):
    uids = [f"u{k}" for k in range(5)]
    with db.session() as s:
        stored = persist_results(s, [upload(uid, b"one") for uid in uids[:2]], data_dir=data,
                                 image_policy="never")
    clashes = [upload(uid, b"two") for uid in uids]
    batch = [upload(uid, b"one") for uid in uids[2:]] + clashes
    with db.session() as s, pytest.raises(FrameUidConflict) as refused:
        persist_results(s, batch, data_dir=data, image_policy="never")
    assert str(refused.value).startswith(f"frame_uid 'u0' (inspection {stored[0].id}), 'u1' (inspection "
                                         f"{stored[1].id}), 'u2' and 2 more is already stored with a ")
    assert refused.value.results == clashes
    with db.session() as s, pytest.raises(FrameUidConflict) as refused:
        persist_results(s, [*clashes[:2], upload("u2", b"one"), clashes[2]], data_dir=data,
                        image_policy="never")
    assert str(refused.value).startswith(f"frame_uid 'u0' (inspection {stored[0].id}), 'u1' (inspection "
                                         f"{stored[1].id}), 'u2' is already stored with a ")  # three: no more
    assert refused.value.results == clashes[:3]


def test_a_result_or_row_without_a_digest_counts_as_a_replay(db, data: Path):
    with db.session() as s:
        [first] = persist_results(s, [upload("u1", b"one")], data_dir=data, image_policy="never")
    unknown = upload("u1", b"two")
    unknown.image_sha256 = None
    with db.session() as s:
        [again] = persist_results(s, [unknown], data_dir=data, image_policy="never")
    assert (again.id, again.created) == (first.id, False)
    with db.session() as s:  # a row stored before digests were kept
        s.execute(update(Inspection).values(image_sha256=None))
        s.commit()
    with db.session() as s:
        [again] = persist_results(s, [upload("u1", b"two")], data_dir=data, image_policy="never")
    assert (again.id, again.created) == (first.id, False)


# -- image sizes, and images that cannot be written -------------------------------------------------

def test_the_row_keeps_the_disk_size_of_the_image_written_and_the_crops_it_is_given(db, data: Path):
    r = upload("u1", b"x" * 4097)
    r.crop_count, r.crop_size = 2, 8192  # as the ingest worker sets them for the crops it writes
    small = upload("u2", b"y")
    with db.session() as s:
        persist_results(s, [r, small], data_dir=data, image_policy="always")
    assert [row[:5] for row in stored_rows(db)] == [("u1", "images/2026/07/08/u1.png", 8192, 2, 8192),
                                                    ("u2", "images/2026/07/08/u2.png", 4096, 0, 0)]
    assert stored_files(data) == {"images/2026/07/08/u1.png": b"x" * 4097,
                                      "images/2026/07/08/u2.png": b"y"}
    assert HEALTH.skipped == {}


def test_below_the_floor_the_row_is_stored_without_image_or_crops_and_the_skip_counted(db, data: Path):
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0)
    r = upload("u1", b"x" * 5000, camera="cam-low")
    r.crop_count, r.crop_size = 1, 4096
    with db.session() as s:
        [stored] = persist_results(s, [r], data_dir=data, image_policy="always")
        assert stored.created and stored.row.image_path is None
    assert [row[:5] for row in stored_rows(db)] == [("u1", None, 0, 0, 0)]
    assert stored_files(data) == {}
    assert (r.image_skipped, r.image_bytes, r.image_path, r.image_size, r.crop_count, r.crop_size) == (
        "low_disk", None, None, 0, 0, 0)
    assert HEALTH.skipped == {"cam-low": 1}


def test_a_skipped_image_is_counted_by_camera_and_reason_and_logged_with_its_frame(db, data: Path,
                                                                                   caplog):
    from app import metrics

    def skipped(reason: str) -> float:
        labels = {"camera": "cam-skip", "reason": reason}
        return metrics.REGISTRY.get_sample_value("inspect_images_skipped_total", labels) or 0.0

    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0)
    before = skipped("low_disk")
    with caplog.at_level(logging.WARNING, logger="app.storage_health"), db.session() as s:
        persist_results(s, [upload("u-skip", b"x", camera="cam-skip")], data_dir=data, image_policy="always")
    assert skipped("low_disk") - before == 1
    [message] = [rec.getMessage() for rec in caplog.records]
    assert "free space is below INSPECT_DISK_FLOOR_MB (frame u-skip;" in message


def test_an_upload_keeps_no_image_when_only_crops_are_kept(db, data: Path):
    HEALTH.configure(jpeg_quality=90, store_frames=False, floor_mb=0, watermark_mb=0)
    r = upload("u1", b"x")
    with db.session() as s:
        [stored] = persist_results(s, [r], data_dir=data, image_policy="always")
        assert stored.created and stored.row.image_path is None
    assert r.image_bytes is None and r.image_skipped is None
    assert [row[:3] for row in stored_rows(db)] == [("u1", None, 0)] and stored_files(data) == {}


def test_a_failing_image_write_keeps_the_row_without_its_image(db, data: Path):
    (data / "images").write_text("a file where the folder should be")
    r = upload("u1", b"x" * 5000)
    r.crop_count, r.crop_size = 2, 8192
    with db.session() as s:
        [stored] = persist_results(s, [r], data_dir=data, image_policy="always")
        assert stored.created
    assert [row[:5] for row in stored_rows(db)] == [("u1", None, 0, 0, 0)]
    assert (r.image_skipped, r.image_path, r.image_size, r.crop_count) == ("write_failed", None, 0, 0)
    assert HEALTH.image_skip_reason(data) == "write_failed" and HEALTH.skipped == {"": 1}
    with db.session() as s:  # images are held a moment after a failed write: the next one is skipped
        persist_results(s, [upload("u2", b"y")], data_dir=data, image_policy="always")
    assert stored_rows(db)[1][:3] == ("u2", None, 0) and HEALTH.skipped == {"": 2}


def test_write_image_now_sizes_the_file_and_skips_it_below_the_floor_or_when_writes_fail(data: Path):
    r = upload("u1", b"x" * 4097)
    write_image_now(r, data)
    assert (r.image_path, r.image_size, r.image_bytes, r.image_skipped) == (
        "images/2026/07/08/u1.png", 8192, None, None)
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0)
    low = upload("u2", b"y", camera="cam-low")
    write_image_now(low, data)
    assert (low.image_path, low.image_size, low.image_bytes, low.image_skipped) == (None, 0, None, "low_disk")
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=0, watermark_mb=0)
    blocked = data / "blocked"
    blocked.mkdir()
    (blocked / "images").write_text("a file where the folder should be")
    failing = upload("u3", b"z")
    write_image_now(failing, blocked)
    assert (failing.image_path, failing.image_size, failing.image_bytes, failing.image_skipped) == (
        None, 0, None, "write_failed")
    assert stored_files(data) == {"images/2026/07/08/u1.png": b"x" * 4097,
                                      "blocked/images": b"a file where the folder should be"}
    assert HEALTH.skipped == {"cam-low": 1, "": 1}
    assert HEALTH.image_skip_reason(data) == "write_failed"


def test_crops_are_not_written_below_the_floor(data: Path):
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0)
    write_crops(result(ng=True), [b"c0"], data)
    assert stored_files(data) == {}
    write_crops(result(ng=True), [], data)  # nothing to write: no question asked
    assert stored_files(data) == {}


def test_skip_image_if_unwritable_leaves_a_result_whose_files_are_written_already(data: Path):
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0)
    replay = upload("u1", b"x")
    replay.image_bytes, replay.image_path, replay.image_size = None, "images/2026/07/08/u1.png", 4096
    replay.crop_count, replay.crop_size = 1, 4096
    assert skip_image_if_unwritable(replay, data) is False
    assert (replay.image_path, replay.image_size, replay.crop_count, replay.image_skipped) == (
        "images/2026/07/08/u1.png", 4096, 1, None)
    nothing = upload("u2", b"x")
    nothing.image_bytes = None
    assert skip_image_if_unwritable(nothing, data) is False and nothing.image_skipped is None
    crops_only = upload("u3", b"x")  # a frame not kept, its crops to write: skipped below the floor
    crops_only.image_bytes, crops_only.crop_count, crops_only.crop_size = None, 2, 8192
    assert skip_image_if_unwritable(crops_only, data) is False
    assert (crops_only.crop_count, crops_only.crop_size, crops_only.image_skipped) == (0, 0, "low_disk")
    assert HEALTH.skipped == {"": 1}
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=0, watermark_mb=0)
    crops_only = upload("u4", b"x")
    crops_only.image_bytes, crops_only.crop_count = None, 2
    assert skip_image_if_unwritable(crops_only, data) is False and crops_only.crop_count == 2
    framed = upload("u5", b"x")
    assert skip_image_if_unwritable(framed, data) is True and framed.image_bytes == b"x"


# -- a concurrent writer, and a batch that fails after its files were written -----------------------

def store_first_from_elsewhere(db, database_url: str, data: Path, other):
    """Before this session's first INSERT of inspections, another writer (its own engine) commits
    ``other``: the race of two service instances storing one frame_uid. Returns the listener."""
    done: list[int] = []

    def hook(_conn, _cursor, statement, *_args) -> None:
        if not done and " ".join(statement.split()).upper().startswith("INSERT INTO INSPECTIONS"):
            elsewhere = Database(database_url)
            try:
                with elsewhere.session() as s:
                    done.append(persist_results(s, [other], data_dir=data, image_policy="always")[0].id)
            finally:
                elsewhere.dispose()

    event.listen(db.engine, "before_cursor_execute", hook)
    return hook, done


@pytest.mark.parametrize("load_rows", [True, False])
def test_a_frame_stored_meanwhile_with_the_same_image_is_a_replay_and_its_file_stays(
        db, database_url: str, data: Path, load_rows: bool):
    hook, theirs = store_first_from_elsewhere(db, database_url, data, upload("u1", b"same"))
    mine, fresh = upload("u1", b"same"), upload("u2", b"new")
    try:
        with db.session() as s:
            stored = persist_results(s, [mine, fresh], data_dir=data, image_policy="always",
                                     load_rows=load_rows)
    finally:
        event.remove(db.engine, "before_cursor_execute", hook)
    assert [(x.id, x.created) for x in stored] == [(theirs[0], False), (stored[1].id, True)]
    assert stored[1].id != theirs[0]
    if load_rows:
        assert stored[0].row.frame_uid == "u1" and stored[0].row.image_path == "images/2026/07/08/u1.png"
    assert mine.image_path is None and fresh.image_path == "images/2026/07/08/u2.png"
    assert [row[:3] for row in stored_rows(db)] == [("u1", "images/2026/07/08/u1.png", 4096),
                                                    ("u2", "images/2026/07/08/u2.png", 4096)]
    assert stored_files(data) == {"images/2026/07/08/u1.png": b"same", "images/2026/07/08/u2.png": b"new"}


def test_a_frame_stored_meanwhile_with_another_image_is_refused_and_its_file_stays(db, database_url: str,
                                                                                    data: Path):
    hook, theirs = store_first_from_elsewhere(db, database_url, data, upload("u1", b"theirs"))
    mine, fresh = upload("u1", b"mine"), upload("u2", b"new")
    try:
        with db.session() as s, pytest.raises(FrameUidConflict) as refused:
            persist_results(s, [mine, fresh], data_dir=data, image_policy="always")
    finally:
        event.remove(db.engine, "before_cursor_execute", hook)
    assert refused.value.results == [mine] and refused.value.stored == {"u1": theirs[0]}
    assert (mine.image_path, fresh.image_path) == (None, None)
    assert [row[:2] for row in stored_rows(db)] == [("u1", "images/2026/07/08/u1.png")]
    assert stored_files(data) == {"images/2026/07/08/u1.png": b"theirs"}


def test_a_batch_failing_after_its_files_are_written_removes_them_but_not_earlier_ones(db, data: Path):
    journaled, fresh = upload("u2", b"earlier"), upload("u1", b"new")
    for r in (journaled, fresh):
        apply_image_policy(r, "always")  # the camera door decides, before the writer stores
    write_image_now(journaled, data)  # written while the database was away: the replay names its file
    inserted: list[bool] = []

    def fail_after_insert(_conn, _cursor, statement, *_args) -> None:
        sql = " ".join(statement.split()).upper()
        if sql.startswith("INSERT INTO INSPECTIONS"):
            inserted.append(True)
        elif inserted and sql.startswith("SELECT") and " FROM INSPECTIONS" in sql:
            raise RuntimeError("the connection broke")

    event.listen(db.engine, "before_cursor_execute", fail_after_insert)
    try:
        with db.session() as s, pytest.raises(RuntimeError, match="^the connection broke$"):
            persist_results(s, [fresh, journaled], data_dir=data)
    finally:
        event.remove(db.engine, "before_cursor_execute", fail_after_insert)
    assert inserted and stored_rows(db) == []
    assert fresh.image_path is None and fresh.image_bytes == b"new"  # a retry writes it again
    assert journaled.image_path == "images/2026/07/08/u2.png"
    assert stored_files(data) == {"images/2026/07/08/u2.png": b"earlier"}
    with db.session() as s:  # the retry
        persist_results(s, [fresh, journaled], data_dir=data)
    assert [row[:3] for row in stored_rows(db)] == [("u1", "images/2026/07/08/u1.png", 4096),
                                                    ("u2", "images/2026/07/08/u2.png", 4096)]
    assert stored_files(data) == {"images/2026/07/08/u1.png": b"new", "images/2026/07/08/u2.png": b"earlier"}


def test_a_frame_is_encoded_at_the_configured_jpeg_quality():
    noisy = np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for quality in (20, 95):
        HEALTH.configure(jpeg_quality=quality, store_frames=True, floor_mb=0, watermark_mb=0)
        r = inspect_frame(noisy, NG_DETS, model_version="m", frame_uid="q", captured_at=WHEN)
        apply_image_policy(r, "always")
        assert r.image_bytes == images.encode_jpeg(noisy, quality)
    assert images.encode_jpeg(noisy, 20) != images.encode_jpeg(noisy, 95)


def test_a_conflict_of_four_names_three_and_one_more(db, data: Path):
    with db.session() as s:
        persist_results(s, [upload(f"u{k}", b"one") for k in range(4)], data_dir=data, image_policy="never")
    with db.session() as s, pytest.raises(FrameUidConflict, match=r"'u2' \(inspection \d+\) and 1 more is "):
        persist_results(s, [upload(f"u{k}", b"two") for k in range(4)], data_dir=data, image_policy="never")


def test_a_deleted_sqlite_file_is_refused_before_anything_is_written(database_url: str, data: Path):
    if not database_url.startswith("sqlite"):
        pytest.skip("a database file is SQLite's")
    db_file = Path(database_url.removeprefix("sqlite:///"))
    db = Database(database_url)
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda _c, _k, sql, *_a: statements.append(sql))
    try:
        HEALTH.watch_database_file(db_file)
        db_file.rename(db_file.with_name("moved.db"))
        with db.session() as s, pytest.raises(DatabaseFileGone, match="^the database file was deleted "):
            persist_results(s, [upload("u1", b"x")], data_dir=data, image_policy="always")
        assert statements == [] and stored_files(data) == {}
    finally:
        db.dispose()


def test_a_sqlite_file_deleted_while_a_batch_is_written_fails_the_batch_and_removes_its_files(
        database_url: str, data: Path):
    if not database_url.startswith("sqlite"):
        pytest.skip("a database file is SQLite's")
    db_file = Path(database_url.removeprefix("sqlite:///"))
    db = Database(database_url)

    def move_away(_conn, _cursor, statement, *_args) -> None:
        if " ".join(statement.split()).upper().startswith("INSERT INTO INSPECTIONS"):
            db_file.rename(db_file.with_name("moved.db"))  # the open connection writes on, into it

    event.listen(db.engine, "before_cursor_execute", move_away)
    r = upload("u1", b"x")
    try:
        HEALTH.watch_database_file(db_file)
        with db.session() as s, pytest.raises(DatabaseFileGone, match="^the database file was deleted "):
            persist_results(s, [r], data_dir=data, image_policy="always")
    finally:
        db.dispose()
    assert stored_files(data) == {} and r.image_path is None


def test_the_webhook_subscribers_are_asked_once_a_batch_and_each_new_ng_frame_is_queued(db, data: Path):
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/ng", events=["inspection.ng"], secret="s" * 32))
        s.commit()
    reads: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if " FROM WEBHOOKS " in " ".join(statement.split()).upper() + " ":
            reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.session() as s:
            stored = persist_results(s, [upload("u1", b"a"), upload("u2", b"b"), result(ng=False)],
                                     data_dir=data, image_policy="never", load_rows=False)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(reads) == 1
    with db.session() as s:
        queued = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [(d.event, d.payload["id"]) for d in queued] == [("inspection.ng", stored[0].id),
                                                                ("inspection.ng", stored[1].id)]
