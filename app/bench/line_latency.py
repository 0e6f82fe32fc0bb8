"""`bench line-latency`: how long a reject gate waits for a frame's verdict. A simulated camera runs
through the real ingest service (``start_service`` with the cameras file, the MQTT publisher and the
OPC UA server as configured in production) against a real Mosquitto broker started for the run; an
MQTT subscriber on the ``verdict`` topic and an asyncua client subscribed to the camera's
``ProvisionalResult/FrameUid`` note when each frame's provisional verdict reaches them. Latency is
the frame's capture time (wall clock, in the payload) to the receipt; both clients run in this
process, on the same machine, so the clocks are one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from app.bench.measure import machine, percentile_ms
from app.errors import InvalidInput, Unavailable

CAMERA = "gate"
PREFIX = "bench"


@dataclass(frozen=True)
class LineLatencyOptions:
    model: Path
    source: str = "sim://neu-det?fps=30"
    seconds: float = 30.0
    warmup_s: float = 2.0
    workers: int = 2
    intra_op_threads: int = 1
    max_batch: int = 4
    max_wait_ms: float = 10.0
    opcua_interval_ms: float = 10.0
    mosquitto: str | None = None


def find_mosquitto(given: str | None) -> str:
    system = Path("/usr/sbin/mosquitto")
    path = given or shutil.which("mosquitto") or (str(system) if system.exists() else None)
    if path is None or not Path(path).exists():
        raise Unavailable("the mosquitto broker is not installed (Debian: apt-get install mosquitto) "
                          "or give --mosquitto PATH")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receipts:
    """frame_uid -> when it arrived (``time.time()``), and the MQTT payloads by frame_uid."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mqtt: dict[str, float] = {}
        self.opcua: dict[str, float] = {}
        self.payloads: dict[str, dict[str, Any]] = {}

    def on_mqtt(self, _client: Any, _userdata: Any, msg: Any) -> None:
        now = time.time()
        body = json.loads(msg.payload)
        with self.lock:
            self.mqtt.setdefault(body["frame_uid"], now)
            self.payloads.setdefault(body["frame_uid"], body)

    def datachange_notification(self, _node: Any, value: Any, _data: Any) -> None:
        now = time.time()
        if value:
            with self.lock:
                self.opcua.setdefault(str(value), now)


def start_broker(path: str, folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([path, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise Unavailable("mosquitto did not start listening")


def summary(values_s: list[float]) -> dict[str, Any]:
    return {"count": len(values_s), "p50_ms": percentile_ms(values_s, 50),
            "p99_ms": percentile_ms(values_s, 99),
            "max_ms": round(max(values_s) * 1000, 2) if values_s else None}


def run_line_latency(o: LineLatencyOptions) -> dict[str, Any]:
    """One run as a dict (what `bench line-latency` prints as JSON)."""
    from app.db.migrate import upgrade
    from app.settings import load_settings

    if o.seconds <= o.warmup_s or o.warmup_s < 0 or o.workers < 1 or o.max_batch < 1:
        raise InvalidInput("--seconds must exceed --warmup; --workers and --max-batch must be positive")
    if not Path(o.model).is_file():
        raise InvalidInput(f"--model {o.model}: no such file")
    broker_path = find_mosquitto(o.mosquitto)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="inspect-line-latency-") as tmp:
        folder = Path(tmp)
        broker, mqtt_port = start_broker(broker_path, folder)
        try:
            cameras = folder / "cameras.yaml"
            cameras.write_text(yaml.safe_dump({
                "pipeline": {"workers": o.workers, "intra_op_threads": o.intra_op_threads,
                             "max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms},
                "cameras": [{"id": CAMERA, "line": "L1", "station": "gate", "source": o.source,
                             "images": "never"}]}, sort_keys=False))
            db_url = f"sqlite:///{folder / 'bench.db'}"
            upgrade(db_url)
            opcua_port = free_port()
            settings = load_settings(
                database_url=db_url, model_path=Path(o.model), data_dir=folder / "data", providers=["cpu"],
                intra_op_threads=o.intra_op_threads, mqtt_host="127.0.0.1", mqtt_port=mqtt_port,
                mqtt_prefix=PREFIX, opcua_endpoint=f"opc.tcp://127.0.0.1:{opcua_port}/bench/")
            return _measure(o, settings, cameras, opcua_port, mqtt_port, load_at_start)
        finally:
            broker.terminate()
            broker.wait(10)


def _measure(o: LineLatencyOptions, settings: Any, cameras: Path, opcua_port: int, mqtt_port: int,
             load_at_start: float) -> dict[str, Any]:
    import paho.mqtt.client as paho
    from asyncua import ua
    from asyncua.sync import Client, ThreadLoop
    from paho.mqtt.enums import CallbackAPIVersion

    from app.service import Role, running_service

    receipts = Receipts()
    subscriber = paho.Client(CallbackAPIVersion.VERSION2)
    subscriber.on_message = receipts.on_mqtt
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/+/+/verdict", qos=0)
    subscriber.connect("127.0.0.1", mqtt_port)
    subscriber.loop_start()
    if not subscribed.wait(10):
        raise Unavailable("the MQTT subscriber could not subscribe")
    try:
        with running_service(settings, Role.INGEST, cameras) as service, ThreadLoop(timeout=10) as tloop:
            t0 = time.time()
            # the client's connection watchdog reads the server state every watchdog_intervall seconds
            # and gives up on a slow answer: on a loaded machine that would end the run, not measure it
            client = Client(f"opc.tcp://127.0.0.1:{opcua_port}/bench/", timeout=10, watchdog_intervall=30.0,
                            tloop=tloop)
            client.connect()
            try:
                ns = client.get_namespace_index(settings.opcua_namespace)
                ident = f"DefectInspection/Cameras/{CAMERA}/ProvisionalResult/FrameUid"
                node = client.get_node(ua.NodeId(ident, ns))
                while True:  # the camera's nodes appear with its first verdict
                    try:
                        node.read_value()
                        break
                    except ua.UaStatusCodeError:
                        if time.time() - t0 > 30:
                            raise Unavailable("no verdict from the camera within 30 s") from None
                        time.sleep(0.05)
                sub = client.create_subscription(o.opcua_interval_ms, receipts)
                sub.subscribe_data_change(node)
                time.sleep(max(0.0, o.seconds - (time.time() - t0)))
                pipeline = service.pipeline
                state = pipeline.cameras[0].state.snapshot()
                commit_latencies = pipeline.latencies.to_list()
                verdicts_dropped = service.mqtt.verdicts.dropped + service.opcua.verdicts.dropped
                sub.delete()
            finally:
                client.disconnect()
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    start = t0 + o.warmup_s
    with receipts.lock:
        payloads = dict(receipts.payloads)
        mqtt, opcua = dict(receipts.mqtt), dict(receipts.opcua)
    captured = {uid: datetime.fromisoformat(p["captured_at"]).timestamp() for uid, p in payloads.items()}
    inferred = {uid: datetime.fromisoformat(p["inferred_at"]).timestamp() for uid, p in payloads.items()}
    counted = [uid for uid, at in captured.items() if at >= start]
    window_s = o.seconds - o.warmup_s
    return {
        "bench": "line-latency", "model": str(o.model), "source": o.source, "seconds": o.seconds,
        "warmup_s": o.warmup_s, "frames": len(counted), "fps": round(len(counted) / window_s, 2),
        "capture_to_mqtt": summary([mqtt[u] - captured[u] for u in counted]),
        "capture_to_opcua": summary([opcua[u] - captured[u] for u in counted if u in opcua]),
        "capture_to_inference_end": summary([inferred[u] - captured[u] for u in counted]),
        "capture_to_commit": summary(commit_latencies),
        "opcua_missed": sum(1 for u in counted if u not in opcua),
        "verdicts_dropped": verdicts_dropped, "camera_dropped": state["dropped"],
        "mqtt_qos": 0, "opcua_publishing_interval_ms": o.opcua_interval_ms, "workers": o.workers,
        "intra_op_threads": o.intra_op_threads, "max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms,
        "load_avg_at_start": round(load_at_start, 2), "machine": machine(),
    }


def table(result: dict[str, Any]) -> str:
    """The latency rows as a text table."""
    rows = [("path", "count", "p50 ms", "p99 ms", "max ms")]
    for key in ("capture_to_inference_end", "capture_to_mqtt", "capture_to_opcua", "capture_to_commit"):
        s = result[key]
        rows.append((key.replace("_", " "), str(s["count"]), str(s["p50_ms"]), str(s["p99_ms"]),
                     str(s["max_ms"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))) for row in rows)
