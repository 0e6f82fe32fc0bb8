"""Seeded defect logs and small helpers shared by the MES, auth, webhook and dashboard tests.

The seed is described by plain Python data (``SEED``), so a test can compute what an endpoint must answer
without going through the code under test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


@dataclass
class SeedDefect:
    class_id: int
    confidence: float
    box: tuple[float, float, float, float]

    @property
    def class_name(self) -> str:
        return NAMES[self.class_id]


@dataclass
class SeedInspection:
    index: int
    line: str
    station: str
    part_id: str
    captured_at: datetime
    defects: list[SeedDefect] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "NG" if self.defects else "OK"

    @property
    def camera_id(self) -> str:
        return f"cam-{self.line}-{self.station}".lower()

    @property
    def frame_uid(self) -> str:
        return f"seed-{self.index:03d}"


def build_seed(n: int = 30, t0: datetime = T0) -> list[SeedInspection]:
    """``n`` inspections over ~1.7 hours; pairs share a capture time (tie-breaks matter), every 4th is NG
    with one or two defects, lines L1 (S1, S2) and L2 (S1), three inspections per part."""
    out = []
    for i in range(n):
        line = "L2" if i % 3 == 2 else "L1"
        station = "S1" if line == "L2" or i % 3 == 0 else "S2"
        defects = []
        if i % 4 == 0:
            defects.append(SeedDefect(i % 3, round(0.30 + i * 0.02, 4), (20.0 + i, 30.0, 90.0 + i, 80.0)))
            if i % 8 == 0:
                defects.append(SeedDefect(5, round(0.95 - i * 0.01, 4), (100.0, 10.0, 150.0, 40.0)))
        out.append(SeedInspection(i, line, station, f"P{i // 3:03d}", t0 + timedelta(minutes=7 * (i // 2)),
                                  defects))
    return out


SEED = build_seed()


def frame(index: int, h: int = 120, w: int = 160) -> np.ndarray:
    """A deterministic grey steel-like frame."""
    rng = np.random.default_rng(index)
    base = np.linspace(90, 170, w, dtype=np.float32)[None, :].repeat(h, 0)
    noise = rng.normal(0, 12, (h, w)).astype(np.float32)
    gray = np.clip(base + noise, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def seed_database(database_url: str, data_dir: Path, seed: list[SeedInspection] = SEED) -> dict[int, int]:
    """Insert ``seed`` (images stored for NG inspections) and return {seed index: inspection id}."""
    from app.db.models import Camera, Defect, Inspection
    from app.db.session import Database

    db = Database(database_url)
    ids: dict[int, int] = {}
    try:
        with db.session() as session:
            for cam in sorted({(s.camera_id, s.line, s.station) for s in seed}):
                session.add(Camera(id=cam[0], line=cam[1], station=cam[2]))
            session.flush()
            for s in seed:
                image_path = None
                if s.defects:
                    image_path = f"images/seed/{s.frame_uid}.jpg"
                    target = data_dir / image_path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    assert cv2.imwrite(str(target), frame(s.index))
                row = Inspection(
                    frame_uid=s.frame_uid, camera_id=s.camera_id, line=s.line, station=s.station,
                    part_id=s.part_id, source="api", captured_at=s.captured_at, received_at=s.captured_at,
                    verdict=s.verdict, defect_count=len(s.defects), model_version="seed-1",
                    image_path=image_path, width=160, height=120,
                )
                row.defects = [Defect(class_id=d.class_id, class_name=d.class_name, confidence=d.confidence,
                                      x1=d.box[0], y1=d.box[1], x2=d.box[2], y2=d.box[3]) for d in s.defects]
                session.add(row)
                session.flush()
                ids[s.index] = row.id
            session.commit()
    finally:
        db.dispose()
    return ids


def make_key(database_url: str, role: str, name: str | None = None) -> str:
    """A real API key stored (hashed) in the database."""
    from app.auth import create_key
    from app.db.session import Database

    db = Database(database_url)
    try:
        with db.session() as session:
            _, key = create_key(session, name or f"{role}-key", role)
            session.commit()
    finally:
        db.dispose()
    return key


def jpeg_bytes(value: int = 255, h: int = 100, w: int = 300) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def assert_problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert {"type", "title", "detail"} <= set(body), body
    return body
