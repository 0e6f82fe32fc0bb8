"""Provisional verdicts: a frame's verdict announced as soon as inference ends, before the database
writer's batched commit, so a reject gate downstream can act within a fraction of a second. The
stored record follows on its own topic / nodes once committed (it may differ only if the commit
fails: then the frame is journaled and stored later, or set aside, see app.ingest.writer).

The inference workers hand each batch's verdicts to :meth:`VerdictRelay.offer` (a deque append under
a lock, never blocking); beyond ``queue_size`` waiting verdicts the newest are dropped and counted.
The relay's own thread hands them to its sink (the MQTT publisher, the OPC UA server)."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.background import BackgroundLoop
from app.inspection import InspectionResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProvisionalVerdict:
    """One inspected frame's verdict before it is stored."""

    frame_uid: str
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    verdict: str
    defects: dict[str, int]  # class name -> count
    captured_at: datetime
    inferred_at: datetime
    model_version: str
    position: int | None = None  # the frame's index in its camera's stream
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, result: InspectionResult, inferred_at: datetime | None = None,
           position: int | None = None) -> ProvisionalVerdict:
        dets = result.detections
        names = list(dets.names)
        classes = Counter(names[int(c)] if 0 <= int(c) < len(names) else str(int(c)) for c in dets.class_id)
        return cls(frame_uid=result.frame_uid, camera_id=result.camera_id, line=result.line,
                   station=result.station, part_id=result.part_id, verdict=result.verdict,
                   defects=dict(sorted(classes.items())), captured_at=result.captured_at,
                   inferred_at=inferred_at or datetime.now(UTC), model_version=result.model_version,
                   position=position)

    @property
    def defect_count(self) -> int:
        return sum(self.defects.values())

    def payload(self) -> dict[str, Any]:
        """The JSON object of the ``verdict`` topic (docs/integration.md)."""
        return {"frame_uid": self.frame_uid, "camera_id": self.camera_id, "line": self.line,
                "station": self.station, "part_id": self.part_id, "verdict": self.verdict,
                "defect_count": self.defect_count, "defects": self.defects,
                "captured_at": self.captured_at.isoformat(), "inferred_at": self.inferred_at.isoformat(),
                "model_version": self.model_version, "position": self.position, "provisional": True}

    def to_json(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":")).encode()


class VerdictRelay:
    """A bounded hand-over from the inference workers to ``deliver`` (called in the relay's thread
    with the verdicts waiting, oldest first). ``dropped``: verdicts refused because the queue was
    full; ``on_drop(n)`` is told too (a metric)."""

    def __init__(self, deliver: Callable[[list[ProvisionalVerdict]], None], queue_size: int,
                 name: str, on_drop: Callable[[int], None] | None = None) -> None:
        self.deliver = deliver
        self.queue_size = queue_size
        self.name = name
        self.on_drop = on_drop
        self.dropped = 0
        self.delivered = 0
        self._queue: deque[ProvisionalVerdict] = deque()
        self._lock = threading.Lock()
        # delivers what waits at once, looks again every half second, and on stop delivers what is left
        self._loop = BackgroundLoop(name, self._deliver_waiting, 0.5, drain=True)

    def offer(self, verdicts: list[ProvisionalVerdict]) -> None:
        """From an inference worker: never blocks beyond a short lock."""
        with self._lock:
            room = max(0, self.queue_size - len(self._queue))
            self._queue.extend(verdicts[:room])
        refused = len(verdicts) - min(room, len(verdicts))
        if refused:
            log.warning("%s: %d provisional verdict(s) dropped (queue full)", self.name, refused)
            self.count_dropped(refused)
        self._loop.wake()

    def count_dropped(self, n: int) -> None:
        """Verdicts not announced: refused here, or by the sink (the MQTT broker away)."""
        with self._lock:
            self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def start(self) -> VerdictRelay:
        self._loop.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what waits, then end the thread."""
        self._loop.stop(timeout)

    def _take(self) -> list[ProvisionalVerdict]:
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
            return taken

    def _deliver_waiting(self) -> bool:
        """One step of the relay's loop; True when more verdicts came meanwhile."""
        verdicts = self._take()
        if verdicts:
            try:
                self.deliver(verdicts)
                self.delivered += len(verdicts)
            except Exception:  # a sink's failure never stops the relay
                log.exception("%s: %d provisional verdicts not delivered", self.name, len(verdicts))
        return bool(self._queue)
