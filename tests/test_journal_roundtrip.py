"""A result journaled during a database outage and replayed later is stored exactly as the same result
stored directly: every column of its inspection and defect rows, its image file and its defect crops
(property-based: any valid result, on SQLite and PostgreSQL). And the journal record alone gives back
every field of the result."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import NEU_NAMES, PG_ENV, _fresh_postgres_db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app import images
from app.db.migrate import upgrade
from app.db.models import Defect, Inspection
from app.db.session import Database
from app.detections import Detections
from app.image_policy import ImagePolicy, should_store
from app.ingest.journal import Journal
from app.ingest.writer import DbWriter, Item, from_journal, to_journal
from app.inspection import CameraContext, InspectionResult, Timings, apply_image_policy, inspect_frame
from app.inspection.codec import NOT_JOURNALED

ZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
COUNTER = itertools.count()  # frame_uids unique across examples (the databases live per test)
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)


@dataclass(frozen=True)
class Spec:
    """Everything a result is made from; ``build`` makes a fresh result each time (storing mutates it)."""

    frame: np.ndarray
    upload: str | None  # None: a camera frame; "png" | "jpeg": the original upload, stored as-is
    boxes: list[tuple[float, float, float, float]]
    confidences: list[float]
    class_ids: list[int]
    context: CameraContext
    part_id: str | None
    captured_at: datetime
    received_at: datetime
    timings: tuple[float, float, float, float]
    model_version: str
    source: str
    policy: ImagePolicy
    crops: list[bytes]

    def build(self, frame_uid: str) -> Item:
        upload = None
        if self.upload is not None:
            ok, buf = cv2.imencode(".png" if self.upload == "png" else ".jpg", self.frame)
            assert ok
            upload = buf.tobytes()
        dets = Detections(self.boxes, self.confidences, self.class_ids, NEU_NAMES)
        result = inspect_frame(
            self.frame, dets, model_version=self.model_version, context=self.context, part_id=self.part_id,
            captured_at=self.captured_at, received_at=self.received_at, timings=Timings(*self.timings),
            frame_uid=frame_uid, source=self.source, image_bytes=upload,
            image_ext=images.EXTENSIONS[self.upload] if self.upload else ".jpg")
        apply_image_policy(result, self.policy)  # as the door does: the ingest worker or the REST route
        return Item(result, None, list(self.crops) if result.image_bytes is not None else [])


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    h, w = draw(st.integers(8, 40)), draw(st.integers(8, 56))
    seed = draw(st.integers(0, 2**32 - 1))
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    n = draw(st.integers(0, 4))
    coord = st.floats(0, 1, allow_nan=False, width=32)
    boxes = []
    for _ in range(n):
        x = sorted(draw(st.lists(coord, min_size=2, max_size=2)))
        y = sorted(draw(st.lists(coord, min_size=2, max_size=2)))
        boxes.append((x[0] * w, y[0] * h, x[1] * w, y[1] * h))
    camera_id = draw(st.none() | st.sampled_from(["cam-1", "cam-2"]))
    return Spec(
        frame=frame, upload=draw(st.sampled_from([None, "png", "jpeg"])), boxes=boxes,
        confidences=draw(st.lists(st.floats(0.0625, 1.0, width=32), min_size=n, max_size=n)),
        class_ids=draw(st.lists(st.integers(0, len(NEU_NAMES) - 1), min_size=n, max_size=n)),
        context=CameraContext(camera_id, line=draw(st.none() | SAFE_TEXT),
                              station=draw(st.none() | SAFE_TEXT)),
        part_id=draw(st.none() | SAFE_TEXT),
        captured_at=draw(st.datetimes(datetime(2001, 1, 1), datetime(2099, 1, 1),
                                      timezones=st.sampled_from(ZONES))),
        received_at=draw(st.datetimes(datetime(2001, 1, 1), datetime(2099, 1, 1),
                                      timezones=st.sampled_from(ZONES))),
        timings=tuple(draw(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=4, max_size=4))),
        model_version=draw(SAFE_TEXT.filter(bool)), source=draw(st.sampled_from(["api", "stream"])),
        policy=draw(st.sampled_from(["always", "ng", "never"])),
        crops=draw(st.lists(st.binary(min_size=1, max_size=64), max_size=3)))


# -- the journal record alone ------------------------------------------------------------------------
def journaled_fields(r: InspectionResult) -> dict:
    out = {}
    for f in fields(r):
        value = getattr(r, f.name)
        if f.name in NOT_JOURNALED:
            continue
        if isinstance(value, Detections):
            value = (value.xyxy.tolist(), value.confidence.tolist(), value.class_id.tolist(),
                     tuple(value.names))
        out[f.name] = value
    return out


@settings(max_examples=200, deadline=None, database=None)
@given(spec=specs(), image_path=st.none() | st.just("images/2026/11/27/x.png"))
def test_a_journal_record_gives_back_every_field_of_its_result(spec: Spec, image_path: str | None) -> None:
    item = spec.build("uid-1")
    item.result.image_bytes = None  # the frame is a file by now
    item.result.image_path = image_path
    line = json.dumps(to_journal(item), separators=(",", ":"))  # as the journal writes it
    back = from_journal(json.loads(line)).result
    assert journaled_fields(back) == journaled_fields(item.result)
    assert back.detections.xyxy.dtype == np.float32 and back.detections.confidence.dtype == np.float32
    assert back.captured_at.utcoffset() == item.result.captured_at.utcoffset()


def test_a_record_from_before_image_ext_existed_reads_back_with_its_default() -> None:
    rec = to_journal(Spec(np.zeros((8, 8, 3), np.uint8), None, [], [], [], CameraContext(), None,
                          datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), (1, 2, 3, 4),
                          "v", "stream", "never", []).build("uid-old"))
    del rec["image_ext"]
    assert from_journal(rec).result.image_ext == ".jpg"


# -- through the database: direct vs journaled and replayed ---------------------------------------------
@pytest.fixture
def second_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Another migrated database on the same backend as ``database_url``."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'journaled.db'}"
        upgrade(url)
        yield url
        return
    url, drop = _fresh_postgres_db(os.environ[PG_ENV])
    try:
        upgrade(url)
        yield url
    finally:
        drop()


def unreachable(url: str, tmp_path: Path) -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-folder' / 'inspect.db'}"
    return "postgresql+psycopg://postgres@127.0.0.1:1/unreachable"


def stored_row(db: Database, frame_uid: str) -> tuple[dict, list[dict]]:
    """Every column of the inspection row and of its defect rows (but their own ids)."""
    with db.session() as s:
        row = s.scalars(select(Inspection).where(Inspection.frame_uid == frame_uid)).one()
        inspection = {c.key: getattr(row, c.key) for c in Inspection.__table__.columns if c.key != "id"}
        defects = [{c.key: getattr(d, c.key) for c in Defect.__table__.columns
                    if c.key not in ("id", "inspection_id")} for d in row.defects]
    return inspection, defects


def files_of(data_dir: Path, frame_uid: str) -> dict[str, bytes]:
    return {p.relative_to(data_dir).as_posix(): p.read_bytes()
            for p in data_dir.rglob(f"{frame_uid}*") if p.is_file()}


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(specs(), min_size=1, max_size=3))
def test_a_journaled_result_is_stored_as_the_same_result_stored_directly(
        batch: list[Spec], database_url: str, second_database_url: str, tmp_path: Path) -> None:
    uids = [f"rt{next(COUNTER):06d}" for _ in batch]
    direct_db, journal_db = Database(database_url), Database(second_database_url)
    down_db = Database(unreachable(database_url, tmp_path))
    direct_dir, journal_dir = tmp_path / "direct", tmp_path / "journaled"
    try:
        direct = DbWriter(direct_db, Journal(tmp_path / "direct-journal"), direct_dir)
        direct.start()
        direct.submit_many([s.build(uid) for s, uid in zip(batch, uids, strict=True)])
        direct.stop()
        assert direct.committed == len(batch)

        away = DbWriter(down_db, Journal(tmp_path / "journal"), journal_dir, retry_s=3600)
        away.start()
        away.submit_many([s.build(uid) for s, uid in zip(batch, uids, strict=True)])
        away.stop()
        assert away.journaled == len(batch) and not away.db_up

        back = DbWriter(journal_db, Journal(tmp_path / "journal"), journal_dir)
        back.start()
        back.stop()
        assert back.replayed == len(batch) and back.journal.pending == 0

        for spec, uid in zip(batch, uids, strict=True):
            inspection, defects = stored_row(direct_db, uid)
            assert stored_row(journal_db, uid) == (inspection, defects)
            kept = should_store(spec.policy, inspection["verdict"])
            assert (inspection["image_path"] is not None) == kept
            stored_files = files_of(direct_dir, uid)
            assert files_of(journal_dir, uid) == stored_files
            assert len(stored_files) == ((1 + len(spec.crops)) if kept else 0)
            if kept:
                assert stored_files[inspection["image_path"]] == spec.build(uid).result.image_bytes
    finally:
        for db in (direct_db, journal_db, down_db):
            db.dispose()

