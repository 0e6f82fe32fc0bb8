"""Drill: PostgreSQL stopped and started again under API load from several client threads, against the
real app under uvicorn. Every answer is 201 or 202 (no 5xx, no reset connection), the monitoring routes
answer during the outage and say the database is down (without its address), the journal drains after
the restart, and every acknowledged frame is stored exactly once, equal field by field (image included)
to what a direct store of the same frame writes.

Run: see docs/reliability.md (``-s`` prints the measured figures)."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from drill_helpers import postgres_server, scratch_database
from live_server import serving
from mes_helpers import jpeg_bytes, make_key
from sqlalchemy import func, select

from app import images
from app.db.models import Defect, Inspection
from app.db.session import Database
from app.engine_factory import build_engine
from app.inspection import CameraContext, Timings, inspect_frame, persist_results, run_detector
from app.settings import Settings

pytestmark = [pytest.mark.drill, pytest.mark.postgres]

CLIENTS = int(os.environ.get("INSPECT_DRILL_CLIENTS", "6"))  # client threads posting frames
PER_CLIENT = 12  # answers each client gets at least while the database is stopped
OUTAGE_S = float(os.environ.get("INSPECT_DRILL_OUTAGE_S", "5"))  # how long the database stays stopped
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SKIP_COLUMNS = {"id", "received_at", "decode_ms", "inference_ms", "postprocess_ms", "total_ms"}


@dataclass
class Answer:
    client: int
    frame_uid: str
    phase: str  # before | outage | after
    status: int | None  # None: no answer (connection reset, refused, timed out)
    seconds: float
    error: str | None = None


def frame_of(client: int, n: int) -> tuple[str, dict[str, str], bytes]:
    """The frame_uid, query and JPEG of client ``client``'s ``n``-th post (bright frames are NG)."""
    uid = f"drill-{client}-{n:05d}"
    query = {"frame_uid": uid, "camera_id": f"cam-{client}", "line": "L1", "part_id": f"P-{client}-{n}",
             "captured_at": (T0 + timedelta(seconds=client * 100_000 + n)).isoformat()}
    return uid, query, jpeg_bytes(value=(37 * n + 11 * client) % 256, h=48, w=64)


def wait_until(cond: Callable[[], bool], timeout: float = 90.0, poll: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(poll)


class Load:
    """CLIENTS threads posting frames back to back, each on its own keep-alive connection."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key
        self.phase = "before"
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(CLIENTS)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def count(self, phase: str, client: int | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.phase == phase and client in (None, a.client))

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30, headers={"X-API-Key": self.key}) as http:
            n = 0
            while not self._stop.is_set():
                uid, query, body = frame_of(client, n)
                phase, t0 = self.phase, time.perf_counter()
                try:
                    resp = http.post("/api/v1/inspections", params=query, content=body,
                                     headers={"Content-Type": "image/jpeg"})
                    answer = Answer(client, uid, phase, resp.status_code, time.perf_counter() - t0,
                                    None if resp.status_code in (201, 202) else resp.text[:300])
                except httpx.TransportError as exc:
                    answer = Answer(client, uid, phase, None, time.perf_counter() - t0, repr(exc))
                with self._lock:
                    self.answers.append(answer)
                n += 1


def direct_store(settings: Settings, frames: list[tuple[str, dict[str, str], bytes]], url: str,
                 data_dir: Path) -> None:
    """The same frames stored straight through the inspection step (no HTTP, no journal)."""
    engine = build_engine(settings)
    db = Database(url)
    try:
        for uid, query, data in frames:
            frame, info = images.decode(data, settings.max_pixels)
            [dets], _, _ = run_detector(engine, [frame], settings.conf_threshold, settings.iou_threshold,
                                        settings.max_det, None)
            result = inspect_frame(
                frame, dets, model_version=engine.version,
                context=CameraContext(camera_id=query["camera_id"], line=query["line"]),
                part_id=query["part_id"], captured_at=datetime.fromisoformat(query["captured_at"]),
                received_at=T0, timings=Timings(0, 0, 0, 0), frame_uid=uid, source="api", image_bytes=data,
                image_ext=images.EXTENSIONS[info.format])
            with db.session() as session:
                persist_results(session, [result], data_dir=data_dir, image_policy=settings.image_policy)
    finally:
        db.dispose()


def _utc(value: object) -> object:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return value


def stored_view(url: str, data_dir: Path) -> dict[str, dict]:
    """frame_uid -> every compared column, its defects and its image bytes."""
    db = Database(url)
    try:
        with db.session() as session:
            out = {}
            for row in session.scalars(select(Inspection)):
                cols = {c: _utc(getattr(row, c)) for c in Inspection.__table__.columns.keys()  # noqa: SIM118
                        if c not in SKIP_COLUMNS}
                defects = [(d.class_id, d.class_name, d.confidence, d.x1, d.y1, d.x2, d.y2)
                           for d in session.scalars(select(Defect).where(Defect.inspection_id == row.id)
                                                    .order_by(Defect.id))]
                image = images.resolve(data_dir, row.image_path).read_bytes() if row.image_path else None
                out[row.frame_uid] = {**cols, "defects": defects, "image": image}
            return out
    finally:
        db.dispose()


def test_postgres_outage_under_api_load(tiny_model_path: Path, tmp_path: Path) -> None:
    server = postgres_server()
    with scratch_database(server) as url:
        settings = Settings(database_url=url, model_path=tiny_model_path, data_dir=tmp_path / "data",
                            image_policy="always", auth_enabled=True, metrics_public=True, providers=["cpu"],
                            intra_op_threads=1, key_cache_s=600, db_probe_s=0.25)
        camera_key = make_key(url, "camera", "cam-drill")
        mes_key = make_key(url, "mes", "mes-drill")
        mes = {"X-API-Key": mes_key}
        with serving(settings) as base, httpx.Client(base_url=base, timeout=30) as probe:
            assert probe.get("/api/v1/cameras", headers=mes).status_code == 200  # verified: cached
            with Load(base, camera_key) as load:
                wait_until(lambda: all(load.count("before", c) >= 5 for c in range(CLIENTS)))
                load.phase = "outage"
                outage_started = time.perf_counter()
                server.stop()
                time.sleep(OUTAGE_S)  # the length of the drill's outage, not an assertion
                wait_until(lambda: all(load.count("outage", c) >= PER_CLIENT for c in range(CLIENTS)))

                # the monitoring routes answer and say the database is down, without its address
                ready = probe.get("/readyz")
                assert ready.status_code == 503 and "database unreachable" in ready.json()["reasons"]
                cams = probe.get("/api/v1/cameras", headers=mes)
                assert cams.status_code == 200, cams.text
                assert cams.json()["database"]["up"] is False and cams.json()["journal"]["pending"] > 0
                metrics_text = probe.get("/metrics").text
                assert "inspect_db_up 0.0" in metrics_text
                for text in (ready.text, cams.text):
                    assert "55440" not in text and "127.0.0.1" not in text and "refused" not in text
                # a key never seen before cannot be checked: 503 with Retry-After, not 401
                unknown = probe.get("/api/v1/cameras", headers={"X-API-Key": "dik_00000000_" + "x" * 40})
                assert unknown.status_code == 503 and unknown.headers["Retry-After"]
                pending_uid = next(a.frame_uid for a in load.answers if a.status == 202)
                assert probe.get(f"/api/v1/inspections/by-frame/{pending_uid}",
                                 headers=mes).status_code == 202

                outage_s = time.perf_counter() - outage_started
                server.start()
                restarted = time.perf_counter()
                load.phase = "after"
                wait_until(lambda: load.count("after") >= 3 * CLIENTS)

            def drained() -> bool:
                body = probe.get("/api/v1/cameras", headers=mes).json()
                return body["database"]["up"] and body["journal"]["pending"] == 0

            wait_until(drained)
            drain_s = time.perf_counter() - restarted
            cams_after = probe.get("/api/v1/cameras", headers=mes).json()
            assert cams_after["database"] == {"up": True, "last_error": None, "down_for_s": None}
            found = probe.get(f"/api/v1/inspections/by-frame/{pending_uid}", headers=mes)
            assert found.status_code == 200 and found.json()["frame_uid"] == pending_uid

        answers = load.answers
        by_status = Counter((a.phase, a.status) for a in answers)
        failures = [a for a in answers if a.status not in (201, 202)]
        assert not failures, failures[:5]  # no 5xx, no reset or refused connection, nothing else
        assert by_status[("outage", 202)] > 0

        # every acknowledged frame stored exactly once ...
        acknowledged = {a.frame_uid for a in answers}
        assert len(acknowledged) == len(answers)
        db = Database(url)
        try:
            with db.session() as session:
                rows = session.execute(select(Inspection.frame_uid, func.count())
                                       .group_by(Inspection.frame_uid)).all()
        finally:
            db.dispose()
        assert {uid for uid, _ in rows} == acknowledged and all(n == 1 for _, n in rows)

        # ... and equal, field by field and image included, to a direct store of the same frame
        frames = [frame_of(int(uid.split("-")[1]), int(uid.split("-")[2])) for uid in sorted(acknowledged)]
        direct_url = f"sqlite:///{tmp_path / 'direct.db'}"
        from app.db.migrate import upgrade

        upgrade(direct_url)
        direct_store(settings, frames, direct_url, tmp_path / "direct-data")
        served = stored_view(url, settings.data_dir)
        direct = stored_view(direct_url, tmp_path / "direct-data")
        assert served.keys() == direct.keys()
        for uid in sorted(served):
            assert served[uid] == direct[uid], uid
            assert served[uid]["image"] is not None

        outage_lat = sorted(a.seconds for a in answers if a.phase == "outage")
        p99 = outage_lat[min(len(outage_lat) - 1, int(0.99 * len(outage_lat)))]
        print(f"\nDRILL postgres outage: {CLIENTS} clients, outage {outage_s:.1f} s; answers "
              f"{dict(sorted(Counter(f'{p}:{s}' for p, s in by_status.elements()).items()))}; "
              f"0 failed; outage latency p50 {statistics.median(outage_lat) * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms, max {outage_lat[-1] * 1000:.1f} ms; "
              f"drained {drain_s:.2f} s after restart; {len(served)} rows, each once, equal to a direct "
              "store")


def test_a_full_journal_answers_503_with_retry_after_and_acknowledges_nothing_it_cannot_keep(
        tiny_model_path: Path, tmp_path: Path) -> None:
    server = postgres_server()
    with scratch_database(server) as url:
        settings = Settings(database_url=url, model_path=tiny_model_path, data_dir=tmp_path / "data",
                            image_policy="always", auth_enabled=False, providers=["cpu"], intra_op_threads=1,
                            journal_max_mb=0.004, db_probe_s=0.25)  # room for a few records only

        def post(http: httpx.Client, n: int) -> httpx.Response:
            uid, query, body = frame_of(0, n)
            return http.post("/api/v1/inspections", params=query, content=body,
                             headers={"Content-Type": "image/jpeg"})

        with serving(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
            assert post(http, 0).status_code == 201
            server.stop()
            statuses = []
            for n in range(1, 200):
                resp = post(http, n)
                statuses.append(resp.status_code)
                if resp.status_code == 503:
                    assert resp.headers["content-type"].startswith("application/problem+json")
                    assert int(resp.headers["Retry-After"]) > 0
                    assert resp.json()["type"].endswith("/journal_unavailable")
                    break
            assert statuses[-1] == 503 and set(statuses[:-1]) == {202}, statuses
            refused = len(statuses)
            server.start()
            wait_until(lambda: http.get("/api/v1/cameras").json()["journal"]["pending"] == 0)
            assert post(http, refused).status_code == 201  # sent again once the database is back

        db = Database(url)
        try:
            with db.session() as session:
                uids = list(session.scalars(select(Inspection.frame_uid).order_by(Inspection.frame_uid)))
        finally:
            db.dispose()
        assert uids == sorted(frame_of(0, n)[0] for n in range(refused + 1))


def test_frames_journaled_before_a_restart_are_stored_after_it(tiny_model_path: Path, tmp_path: Path) -> None:
    server = postgres_server()
    with scratch_database(server) as url:
        settings = Settings(database_url=url, model_path=tiny_model_path, data_dir=tmp_path / "data",
                            image_policy="always", auth_enabled=False, providers=["cpu"], intra_op_threads=1,
                            db_probe_s=0.25)
        uids = []
        with serving(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
            server.stop()
            for n in range(5):
                uid, query, body = frame_of(1, n)
                resp = http.post("/api/v1/inspections", params=query, content=body,
                                 headers={"Content-Type": "image/jpeg"})
                assert resp.status_code == 202, resp.text
                assert resp.headers["Location"] == resp.json()["result_url"]
                uids.append(uid)
        # the service stopped with the database still away: the frames wait on disk
        with serving(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
            for uid in uids:  # known as pending from the journal read at start
                assert http.get(f"/api/v1/inspections/by-frame/{uid}").status_code == 202
            server.start()
            wait_until(lambda: http.get("/api/v1/cameras").json()["journal"]["pending"] == 0)
            for uid in uids:
                found = http.get(f"/api/v1/inspections/by-frame/{uid}")
                assert found.status_code == 200 and found.json()["frame_uid"] == uid
                assert http.get(found.json()["image_url"]).status_code == 200
