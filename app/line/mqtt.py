"""The MQTT publisher: every stored inspection, camera up/down changes and alarms go to a broker
(topics in :mod:`app.line.topics`, payloads the public models of :mod:`app.schemas`).

The inspection path never waits for the broker. The database writer hands over the ids of newly
stored inspections (:meth:`MqttPublisher.inspections_stored`, a deque append); this publisher's own
thread loads them (one SELECT per batch, after the commit) and gives the messages to the MQTT client,
which keeps them in its bounded queue while the broker is away and sends them, QoS 1, once it is
back (reconnecting with exponential back-off). A full queue drops the newest message and counts it
(``inspect_mqtt_dropped_total``); the database record is never affected. Messages still queued when
the process ends are lost (the records are in the database). A camera with tracking also has each
tracked defect (one physical defect, when its track is stored) published on its ``defect`` topic,
QoS 1, not retained (each message is one defect to count or act on), after its best frame's
inspection.

Provisional verdicts (:mod:`app.line.verdicts`) come from the inference workers before the commit,
through a relay of their own, and go out at once on the camera's ``verdict`` topic with QoS 0: at most
once and never late. A reject gate can only use a verdict while its part is still before the gate, so
a verdict is not queued while the broker is away (dropped and counted) nor sent again after a
reconnection; the stored record on the ``inspection`` topic (QoS 1) is the one to rely on for
tracing. The shift counters (:mod:`app.line.shifts`) go on each camera's ``counters`` topic
(retained, QoS 0: only the latest matters, so they never take room in the queue) after each batch
of stored inspections, when a shift starts and on each (re)connection.

The one thing the publisher listens to: each camera's ``part/set`` topic, where the line says which
part is under the camera (:mod:`app.line.part_commands`)."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session

from app import metrics as m
from app.ingest.parts import PartBoard
from app.line.feed import InspectionFeed
from app.line.part_commands import apply_part_message, part_topics
from app.line.shifts import Counts, ShiftCalendar, ShiftCounters
from app.line.topics import availability_topic, camera_topic
from app.line.verdicts import ProvisionalVerdict, VerdictRelay
from app.schemas import CameraCounters, InspectionPublic
from app.schemas.tracks import TrackPublic
from app.settings import Settings
from app.vocabulary import NG

log = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"
QOS = 1
VERDICT_QOS = 0  # provisional verdicts: at most once, never late (see above)


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    prefix: str
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    queue_size: int = 10_000
    keepalive_s: int = 30
    reconnect_max_s: float = 30.0
    verdict_queue_size: int = 1000
    shifts: tuple[str, ...] = ("06:00", "14:00", "22:00")
    shift_timezone: str = "UTC"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), compare=False)

    @classmethod
    def from_settings(cls, s: Settings, role: str) -> MqttConfig | None:
        """None while INSPECT_MQTT_HOST is unset (the publisher is off). The default client id names
        the host and the role, so a ``serve`` and an ``ingest`` process on one machine do not take
        each other's session."""
        if not s.mqtt_host:
            return None
        client_id = s.mqtt_client_id or f"defect-inspect-{socket.gethostname()}-{role}"
        return cls(host=s.mqtt_host, port=s.mqtt_port, prefix=s.mqtt_prefix, client_id=client_id,
                   username=s.mqtt_username,
                   password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
                   tls=s.mqtt_tls, ca_file=s.mqtt_ca_file, cert_file=s.mqtt_cert_file,
                   key_file=s.mqtt_key_file, queue_size=s.mqtt_queue_size, keepalive_s=s.mqtt_keepalive_s,
                   reconnect_max_s=s.mqtt_reconnect_max_s, verdict_queue_size=s.verdict_queue_size,
                   shifts=tuple(s.shifts), shift_timezone=s.shift_timezone)


class MqttPublisher(InspectionFeed):
    """``start()``, then ``inspections_stored(ids)`` and ``tracks_stored(ids)`` from the database writer
    (any thread, never blocks); ``cameras``: the camera states, watched for up/down changes
    (:class:`InspectionFeed`). ``view()``: the state for /readyz and /api/v1/cameras."""

    thread_name = "mqtt-publisher"

    def __init__(self, config: MqttConfig, session_factory: Callable[[], Session] | None,
                 cameras: Callable[[], list[dict[str, Any]]] | None = None, poll_s: float = 0.5,
                 parts: PartBoard | None = None) -> None:
        super().__init__(session_factory, config.queue_size, cameras, poll_s, config.reconnect_max_s)
        self.config = config
        self.parts = parts  # the cameras whose part the line sets on their part/set topic
        self._part_topics = {} if parts is None else part_topics(config.prefix, parts.places())
        self.availability = availability_topic(config.prefix, config.client_id)
        self._lock = threading.Lock()
        self.connected = False
        self.last_error: str | None = None
        self.sent = 0  # handed to the client
        self.acknowledged = 0  # acknowledged by the broker (PUBACK)
        self.dropped = 0
        calendar = ShiftCalendar(config.shifts, config.shift_timezone)
        self.counters: ShiftCounters = ShiftCounters(calendar, config.clock)
        self._where: dict[str, tuple[str | None, str | None]] = {}  # camera -> (line, station)
        self.verdicts = VerdictRelay(self.deliver_verdicts, config.verdict_queue_size, "mqtt-verdicts",
                                     on_drop=lambda n: m.VERDICTS_DROPPED_TOTAL.labels(sink="mqtt").inc(n))
        self.client = self._build_client()

    # -- client -----------------------------------------------------------------------------------
    def _build_client(self) -> paho.Client:
        c = self.config
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=c.client_id, clean_session=True)
        client.max_queued_messages_set(c.queue_size)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(c.reconnect_max_s)))
        client.will_set(self.availability, OFFLINE, qos=QOS, retain=True)
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        if c.tls:
            client.tls_set(ca_certs=str(c.ca_file) if c.ca_file else None,
                           certfile=str(c.cert_file) if c.cert_file else None,
                           keyfile=str(c.key_file) if c.key_file else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = lambda _client, _userdata: self._set_connected(
            False, f"cannot reach the broker at {c.host}:{c.port}")
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._set_connected(False, f"refused by the broker: {reason}")
            return
        self._set_connected(True)
        if self._part_topics:  # a clean session: subscribed again at every connection
            client.subscribe([(topic, QOS) for topic in self._part_topics])
        self._publish(self.availability, ONLINE, retain=True)
        self.show_counters(self.counters.cameras())  # the counters that could not be sent while away
        log.info("MQTT: connected to %s:%d as %s", self.config.host, self.config.port, self.config.client_id)

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        if self.feed_stopping:
            error = None
        elif self.connected or not self.last_error:
            error = f"disconnected: {reason}"
        else:
            error = self.last_error  # the connection attempt failed: keep why (refused, unreachable)
        self._set_connected(False, error)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        camera = self._part_topics.get(msg.topic)
        if camera is not None and self.parts is not None:
            apply_part_message(self.parts, camera, msg.topic, msg.payload)

    def _on_publish(self, _client: paho.Client, _userdata: Any, _mid: int, _reason: Any, _props: Any) -> None:
        with self._lock:
            self.acknowledged += 1
        m.MQTT_PUBLISHED_TOTAL.inc()
        m.MQTT_QUEUED.set(self.queued)

    def _set_connected(self, up: bool, error: str | None = None) -> None:
        if not up and self.connected and error:
            log.warning("MQTT: %s", error)
        self.connected = up
        self.last_error = None if up else error or self.last_error
        m.MQTT_CONNECTED.set(1 if up else 0)

    # -- API --------------------------------------------------------------------------------------
    def start(self) -> MqttPublisher:
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()  # the client's network thread: connects, reconnects with back-off
        self.verdicts.start()
        self.start_feed()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is loaded already, say ``offline`` (retained) and disconnect; a clean disconnect
        keeps the broker from sending the last will."""
        self.verdicts.stop(timeout)
        self.stop_feed(timeout)
        if self.connected:
            info = self.client.publish(self.availability, OFFLINE, qos=QOS, retain=True)
            info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def publish_alarm(self, line: str | None, station: str | None, camera: str | None,
                      payload: bytes) -> None:
        """The hook for alarms: ``payload`` (the alarm's public model as JSON) on the camera's
        ``alarm`` topic, QoS 1, not retained."""
        self._publish(camera_topic(self.config.prefix, line, station, camera, "alarm"), payload, retain=False)

    @property
    def queued(self) -> int:
        """Messages waiting: ids not loaded yet and messages not acknowledged by the broker."""
        return self.waiting + max(0, self.sent - self.acknowledged)

    def view(self) -> dict[str, Any]:
        """The publisher's state (``MqttStatePublic``)."""
        return {"broker": f"{self.config.host}:{self.config.port}", "client_id": self.config.client_id,
                "connected": self.connected, "queued": self.queued, "published": self.acknowledged,
                "dropped": self.dropped, "last_error": self.last_error}

    def deliver_verdicts(self, verdicts: list[ProvisionalVerdict]) -> None:
        """The relay's thread: each verdict on its camera's ``verdict`` topic, QoS 0, not retained;
        while the broker is away they are dropped and counted (a late reject signal is worse than
        none)."""
        for v in verdicts:
            topic = camera_topic(self.config.prefix, v.line, v.station, v.camera_id, "verdict")
            if not self._publish_now(topic, v.to_json(), retain=False):
                self.verdicts.count_dropped(1)

    def _publish_now(self, topic: str, payload: bytes, retain: bool) -> bool:
        """QoS 0: sent now or not at all (False while the broker is away)."""
        info = self.client.publish(topic, payload, qos=VERDICT_QOS, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            self.sent += 1  # on_publish counts it once written to the socket
        return True

    # -- thread -----------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.count_drops(1)
            return
        with self._lock:
            self.sent += 1
        m.MQTT_QUEUED.set(self.queued)

    def count_drops(self, n: int) -> None:
        with self._lock:
            self.dropped += n
        m.MQTT_DROPPED_TOTAL.inc(n)
        log.warning("MQTT: queue full, %d message(s) dropped (%d so far)", n, self.dropped)

    def deliver_inspections(self, inspections: list[InspectionPublic]) -> None:
        """Each on its camera's inspection topic, retained: a subscriber that joins later gets the
        latest inspection of every camera at once."""
        self._deliver(inspections, "inspection", True,
                      lambda camera, i: self.counters.add(camera, i.verdict == NG, i.captured_at, i.id))

    def deliver_tracks(self, tracks: list[TrackPublic]) -> None:
        """Each tracked defect on its camera's ``defect`` topic, not retained: one message per physical
        defect (a retained one would reach every new subscription again and be counted twice)."""
        self._deliver(tracks, "defect", False,
                      lambda camera, t: self.counters.add_defect(camera, t.ended_at, t.id))

    def _deliver(self, records: Sequence[InspectionPublic | TrackPublic], topic: str, retain: bool,
                 count: Callable[[str, Any], Counts]) -> None:
        """Each record on its camera's ``topic``, counted by ``count``; then each touched camera's
        counters once."""
        touched: dict[str, Counts] = {}
        for r in records:
            self._publish(camera_topic(self.config.prefix, r.line, r.station, r.camera_id, topic),
                          r.model_dump_json().encode(), retain=retain)
            camera = self.camera_key(r.camera_id)
            self._where[camera] = (r.line, r.station)
            touched[camera] = count(camera, r)
        for camera, counts in touched.items():
            self._publish_counters(camera, counts)

    def show_counters(self, cameras: list[str]) -> None:
        for camera in cameras:
            self._publish_counters(camera, self.counters.get(camera))

    def where(self, camera: str, line: str | None, station: str | None) -> None:
        self._where.setdefault(camera, (line, station))

    def _publish_counters(self, camera: str, counts: Counts) -> None:
        line, station = self._where.get(camera, (None, None))
        payload = {"camera_id": None if camera == "_" else camera, "line": line, "station": station,
                   "shift_started_at": self.counters.started.isoformat(), "inspected": counts.inspected,
                   "ng": counts.ng, "yield": counts.yield_, "tracked_defects": counts.defects}
        self._publish_now(camera_topic(self.config.prefix, line, station, camera, "counters"),
                          json.dumps(payload, separators=(",", ":")).encode(), retain=True)

    def deliver_camera(self, camera: CameraCounters) -> None:
        self._publish(camera_topic(self.config.prefix, camera.line, camera.station, camera.id, "state"),
                      camera.model_dump_json().encode(), retain=True)
