"""Alarms from the cameras file's rules (``alarms:``), watched over the committed results of the camera
ingest and the cameras' state: N NG frames in a row, more than a number of defects per minute or per
metre of material, a camera down longer than T seconds, per line or per camera.

An alarm fires once: it is stored (``alarms`` table), queued as an ``alarm.raised`` webhook event in the
same transaction, counted in ``inspect_alarms_raised_total`` and shown by ``inspect_alarm_active`` = 1 and
the dashboard's banner. While it is not acknowledged its rule stays quiet (no repeat storm). An operator
acknowledges it (``acknowledge``: who, when, a note); the rule then starts counting afresh, so it fires
again only when its condition builds up again. The monitor sees an acknowledgement made by another
process (the API of ``serve`` for an ``ingest`` process) within ``RECHECK_S``."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import metrics as m
from app.background import BackgroundLoop
from app.db.models import Alarm
from app.db.session import Database
from app.errors import Conflict
from app.ingest.config import AlarmRule
from app.ingest.state import CameraState
from app.inspection import InspectionResult
from app.inspection.tracks import TrackRecord
from app.schemas.alarms import AlarmPublic
from app.vocabulary import NG, utcnow
from app.webhooks import enqueue_event

log = logging.getLogger(__name__)

WINDOW_S = 60.0  # defects_per_minute and defects_per_metre look this far back
RECHECK_S = 5.0  # how often an open alarm is looked up again (acknowledged elsewhere?)
CHECK_EVERY_S = 1.0  # camera_down_s: how often the cameras are looked at


@dataclass
class _Watch:
    """What one rule has seen since it last fired or was acknowledged."""

    rule: AlarmRule
    run: int = 0  # NG frames in a row
    window: deque[tuple[float, int]] = field(default_factory=deque)  # (time, defects) of recent frames
    down_since: dict[str, float] = field(default_factory=dict)  # camera id -> when it went down
    open_alarm: int | None = None  # the alarm raised and not acknowledged
    checked_at: float = 0.0

    def reset(self) -> None:
        self.run = 0
        self.window.clear()
        self.down_since.clear()


def describe(rule: AlarmRule, value: float, camera_id: str | None) -> str:
    """The banner's sentence, unless the rule has its own message."""
    if rule.message:
        return rule.message
    if rule.consecutive_ng is not None:
        return f"{int(value)} NG frame{'s' if int(value) != 1 else ''} in a row on {rule.scope}"
    if rule.defects_per_minute is not None:
        return f"{int(value)} defects in the last minute on {rule.scope} (limit {rule.defects_per_minute:g})"
    if rule.defects_per_metre is not None:
        return (f"{value:g} defects per metre over the last minute on {rule.scope} "
                f"(limit {rule.defects_per_metre:g})")
    return f"camera {camera_id} has delivered no frames for {int(value)} s"


class AlarmMonitor:
    """The rules of one cameras file over one database. ``observe`` is called by the ingest writer
    with each committed batch, ``check_cameras`` by the monitor's thread (``start``/``stop``)."""

    def __init__(self, rules: Sequence[AlarmRule], db: Database, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.clock = clock
        self._watches = [_Watch(rule) for rule in rules]
        self._lock = threading.Lock()
        self._loop = BackgroundLoop("alarms", self._check_step, CHECK_EVERY_S)
        self._cameras: Callable[[], Iterable[CameraState]] = list
        # called with each alarm once it is stored (the MQTT publisher's alarm topic); must not block
        self.raised_listeners: list[Callable[[AlarmPublic], None]] = []
        try:
            with db.session() as session:  # alarms left open by an earlier run stay open
                for watch in self._watches:
                    watch.open_alarm = session.scalar(
                        select(Alarm.id)
                        .where(Alarm.rule_id == watch.rule.id, Alarm.acknowledged_at.is_(None))
                        .order_by(Alarm.id.desc()).limit(1))
        except Exception:  # the database is away at start: alarms are stored once it is back
            log.warning("open alarms could not be read; starting with none", exc_info=True)
        for watch in self._watches:
            m.ALARM_ACTIVE.labels(rule=watch.rule.id).set(1 if watch.open_alarm else 0)

    # -- inputs ------------------------------------------------------------------------------
    def observe(self, results: Iterable[InspectionResult]) -> list[AlarmPublic]:
        """Committed results, in commit order: NG runs and defect counts per rule (a tracked camera's
        frames count no defects: its defects are counted per track, ``observe_tracks``)."""
        raised = []
        with self._lock:
            now = self.clock()
            for result in results:
                for watch in self._watches:
                    rule = watch.rule
                    if rule.camera_down_s is not None or not rule.watches(result.camera_id, result.line):
                        continue
                    if rule.consecutive_ng is not None:
                        watch.run = watch.run + 1 if result.verdict == NG else 0
                        if watch.run >= rule.consecutive_ng:
                            raised += self._fire(watch, watch.run, rule.consecutive_ng, result)
                    else:
                        found = 0 if result.tracked else len(result.detections)
                        raised += self._count(watch, now, found, result.camera_id, result.line)
        return raised

    def observe_tracks(self, tracks: Iterable[TrackRecord]) -> list[AlarmPublic]:
        """Stored tracks (cameras with tracking), in commit order: one physical defect each."""
        raised = []
        with self._lock:
            now = self.clock()
            for track in tracks:
                for watch in self._watches:
                    rule = watch.rule
                    if rule.consecutive_ng is None and rule.camera_down_s is None \
                            and rule.watches(track.camera_id, track.line):
                        raised += self._count(watch, now, 1, track.camera_id, track.line)
        return raised

    def _count(self, watch: _Watch, now: float, found: int, camera_id: str | None,
               line: str | None) -> list[AlarmPublic]:
        """``found`` defects into a defect-count rule's one-minute window; fire past its limit."""
        rule = watch.rule
        watch.window.append((now, found))
        while watch.window and watch.window[0][0] < now - WINDOW_S:
            watch.window.popleft()
        count = sum(n for _, n in watch.window)
        if rule.defects_per_minute is not None and count > rule.defects_per_minute:
            return self._fire(watch, count, rule.defects_per_minute, None, camera_id=camera_id, line=line)
        if rule.defects_per_metre is not None and rule.line_speed_m_per_min:
            per_metre = round(count / (rule.line_speed_m_per_min * WINDOW_S / 60), 3)
            if per_metre > rule.defects_per_metre:
                return self._fire(watch, per_metre, rule.defects_per_metre, None, camera_id=camera_id,
                                  line=line)
        return []

    def check_cameras(self, cameras: Iterable[CameraState]) -> list[AlarmPublic]:
        """Cameras down (not connected, not at the end of their stream) for longer than a rule's T."""
        raised = []
        with self._lock:
            now = self.clock()
            states = list(cameras)
            for watch in self._watches:
                rule = watch.rule
                if rule.camera_down_s is None:
                    continue
                for cam in states:
                    if not rule.watches(cam.camera_id, cam.line):
                        continue
                    if cam.connected or cam.finished:
                        watch.down_since.pop(cam.camera_id, None)
                        continue
                    since = watch.down_since.setdefault(cam.camera_id, now)
                    if now - since > rule.camera_down_s:
                        raised += self._fire(watch, round(now - since, 1), rule.camera_down_s, None,
                                             camera_id=cam.camera_id, line=cam.line)
        return raised

    # -- firing ------------------------------------------------------------------------------
    def _still_open(self, watch: _Watch, now: float) -> bool:
        """Whether the rule's alarm is still raised; an acknowledgement found resets the rule."""
        if watch.open_alarm is None:
            return False
        if now - watch.checked_at < RECHECK_S:
            return True
        watch.checked_at = now
        with self.db.session() as session:
            acknowledged = session.scalar(select(Alarm.acknowledged_at).where(Alarm.id == watch.open_alarm))
        if acknowledged is None:
            return True
        watch.open_alarm = None
        watch.reset()
        m.ALARM_ACTIVE.labels(rule=watch.rule.id).set(0)
        return True  # this observation belongs to the acknowledged episode; count afresh from the next

    def _fire(self, watch: _Watch, value: float, limit: float, result: InspectionResult | None, *,
              camera_id: str | None = None, line: str | None = None) -> list[AlarmPublic]:
        now = self.clock()
        if self._still_open(watch, now):
            return []
        rule = watch.rule
        camera_id = result.camera_id if result is not None else camera_id
        line = result.line if result is not None else line
        alarm = Alarm(rule_id=rule.id, condition=rule.condition, line=line, camera_id=camera_id,
                      message=describe(rule, value, camera_id), value=float(value), limit=float(limit),
                      raised_at=utcnow())
        try:
            with self.db.session() as session:
                session.add(alarm)
                session.flush()
                public = AlarmPublic.from_row(alarm)
                enqueue_event(session, "alarm.raised", public.model_dump(mode="json"))
                session.commit()
        except Exception:  # the database is away: the condition fires again once it is back
            log.exception("alarm %s could not be stored", rule.id)
            return []
        watch.open_alarm, watch.checked_at = public.id, now
        watch.reset()
        m.ALARMS_RAISED_TOTAL.labels(rule=rule.id, condition=rule.condition).inc()
        m.ALARM_ACTIVE.labels(rule=rule.id).set(1)
        log.warning("alarm %s raised: %s", rule.id, public.message)
        for listener in self.raised_listeners:
            try:
                listener(public)
            except Exception:  # a listener never costs the alarm
                log.exception("alarm %s: a listener failed", rule.id)
        return [public]

    # -- the camera thread -------------------------------------------------------------------
    def start(self, cameras: Callable[[], Iterable[CameraState]]) -> AlarmMonitor:
        self._cameras = cameras
        if any(w.rule.camera_down_s is not None for w in self._watches):
            self._loop.start()
        return self

    def _check_step(self) -> bool:
        self.check_cameras(self._cameras())  # a failed round is logged by the loop; the next one retries
        return False

    def stop(self) -> None:
        self._loop.stop(5)


def acknowledge(session: Session, alarm: Alarm, actor: str, note: str | None = None) -> Alarm:
    """``actor`` acknowledges ``alarm`` (kept with the time and note: the audit); a Conflict when it
    was acknowledged before. The caller commits."""
    if alarm.acknowledged_at is not None:
        raise Conflict(f"alarm {alarm.id} was acknowledged by {alarm.acknowledged_by} at "
                       f"{alarm.acknowledged_at.isoformat()}")
    alarm.acknowledged_at = utcnow()
    alarm.acknowledged_by = actor
    alarm.acknowledge_note = note.strip() or None if note else None
    m.ALARM_ACTIVE.labels(rule=alarm.rule_id).set(0)
    return alarm


def acknowledge_by_id(session: Session, alarm_id: int, actor: str, note: str | None = None) -> Alarm | None:
    """Lock alarm ``alarm_id`` and acknowledge it (``acknowledge``); None when there is no such alarm.
    The one path of the REST API and the OPC UA method. The caller commits."""
    alarm = session.scalars(select(Alarm).where(Alarm.id == alarm_id).with_for_update()).first()
    return None if alarm is None else acknowledge(session, alarm, actor, note)
