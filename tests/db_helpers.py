"""Frames stored straight through ``app.inspection.persist_results`` (no HTTP, no model), for the
direct tests of queries, stats, reviews and the reviewed export."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import text

from app.db.session import Database
from app.detections import Detections
from app.image_policy import ImagePolicy
from app.inspection import CameraContext, Stored, inspect_frame, persist_results

NAMES = ("crazing", "patches", "scratches")
NO_IMAGES = Path("/nonexistent")  # the data dir of frames stored with image_policy="never"


@dataclass
class Frame:
    """One frame to store: ``defects`` as (class name, confidence, (x1, y1, x2, y2)) in pixels."""

    uid: str
    captured_at: datetime
    defects: list[tuple[str, float, tuple[float, float, float, float]]] = field(default_factory=list)
    line: str | None = None
    station: str | None = None
    width: int = 100
    height: int = 80

    def detections(self) -> Detections:
        boxes = np.array([box for _, _, box in self.defects], np.float32).reshape(-1, 4)
        return Detections(boxes, np.array([c for _, c, _ in self.defects], np.float32),
                          np.array([NAMES.index(n) for n, _, _ in self.defects], int), NAMES)


def store_frames(db: Database, frames: list[Frame], *, data_dir: Path = NO_IMAGES,
                 image_policy: ImagePolicy = "never") -> list[Stored]:
    """Store ``frames`` in one batch (ids follow frame_uid order); the rows come back with their defects."""
    results = []
    for f in frames:
        ctx = CameraContext(camera_id=f"cam-{f.line}-{f.station}" if f.line else None, line=f.line,
                            station=f.station)
        image = np.full((f.height, f.width, 3), 90, np.uint8)
        results.append(inspect_frame(image, f.detections(), model_version="v", context=ctx, frame_uid=f.uid,
                                     captured_at=f.captured_at, source="stream"))
    with db.session() as s:
        stored = persist_results(s, results, data_dir=data_dir, image_policy=image_policy)
        for x in stored:
            list(x.row.defects)  # loaded while the session is open
    return stored


# -- a database that refuses a batch at its commit ----------------------------------------------------
# Two real ways a batch fails after its image file is written (persist_results writes a frame's file
# once its inspection row is inserted, and commits at the end), each set up on both backends:
# - "delivery": a trigger refuses every webhook delivery (an NG frame queues inspection.ng for a
#   subscribed hook; the session flushes it at commit);
# - "deferred-fk": every inspection row inserts a reference that a deferred foreign key refuses only
#   when the transaction commits.
_REFUSALS = {
    ("delivery", "sqlite"): [
        "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries "
        "BEGIN SELECT RAISE(ABORT, 'deliveries refused'); END",
    ],
    ("delivery", "postgresql"): [
        "CREATE FUNCTION refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'deliveries refused' USING ERRCODE = 'integrity_constraint_violation'; END $$",
        "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON webhook_deliveries "
        "FOR EACH ROW EXECUTE FUNCTION refuse_delivery()",
    ],
    ("deferred-fk", "sqlite"): [
        "CREATE TABLE audit_parents (id INTEGER PRIMARY KEY)",
        "CREATE TABLE audit_refs (inspection_id INTEGER "
        "REFERENCES audit_parents (id) DEFERRABLE INITIALLY DEFERRED)",
        "CREATE TRIGGER audit_inspections AFTER INSERT ON inspections "
        "BEGIN INSERT INTO audit_refs VALUES (NEW.id); END",
    ],
    ("deferred-fk", "postgresql"): [
        "CREATE TABLE audit_parents (id BIGINT PRIMARY KEY)",
        "CREATE TABLE audit_refs (inspection_id BIGINT "
        "REFERENCES audit_parents (id) DEFERRABLE INITIALLY DEFERRED)",
        "CREATE FUNCTION audit_inspection() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO audit_refs VALUES (NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER audit_inspections AFTER INSERT ON inspections "
        "FOR EACH ROW EXECUTE FUNCTION audit_inspection()",
    ],
}
_UNDO = {
    ("delivery", "sqlite"): "DROP TRIGGER refuse_deliveries",
    ("delivery", "postgresql"): "DROP TRIGGER refuse_deliveries ON webhook_deliveries",
    ("deferred-fk", "sqlite"): "DROP TRIGGER audit_inspections",
    ("deferred-fk", "postgresql"): "DROP TRIGGER audit_inspections ON inspections",
}


def refuse(db: Database, refusal: str) -> None:
    """Make the database refuse the way ``refusal`` ("delivery" or "deferred-fk") says."""
    with db.engine.begin() as conn:
        for sql in _REFUSALS[refusal, db.backend]:
            conn.execute(text(sql))


def allow(db: Database, refusal: str) -> None:
    """Take the refusal away again."""
    with db.engine.begin() as conn:
        conn.execute(text(_UNDO[refusal, db.backend]))
