"""Prometheus metrics of the service, all in one registry (``REGISTRY``) served at /metrics.

Other parts add their metrics here, e.g. ``Counter(..., registry=REGISTRY)``."""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

INFERENCE_SECONDS = Histogram(
    "inspect_inference_seconds", "Detector time per batch (preprocess + ONNX Runtime run)",
    ["provider"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INSPECTIONS_TOTAL = Counter(
    "inspect_inspections_total", "Inspections stored, by verdict and camera", ["verdict", "camera"],
    registry=REGISTRY,
)
DEFECTS_TOTAL = Counter(
    "inspect_defects_total", "Defects stored, by class", ["class_name"], registry=REGISTRY,
)
REQUEST_ERRORS_TOTAL = Counter(
    "inspect_request_errors_total", "Rejected requests, by reason", ["reason"], registry=REGISTRY,
)
UPLOADS_IN_FLIGHT = Gauge("inspect_upload_in_flight", "Uploads being decoded and inspected now",
                          registry=REGISTRY)
UPLOADS_QUEUED = Gauge("inspect_upload_queued", "Uploads waiting for an inspection slot", registry=REGISTRY)
UPLOADS_REFUSED_TOTAL = Counter(
    "inspect_upload_refused_total", "Uploads answered 503 by admission control (queue_full|queue_timeout)",
    ["reason"], registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "inspect_model_info", "The loaded model (value 1)", ["version", "provider"], registry=REGISTRY,
)


# -- camera ingest (app/ingest); the Grafana dashboard and alerts in deploy/ use these names ------------
FRAME_STAGES = ("captured", "inspected", "committed", "journaled", "dropped", "skipped")
CAMERA_UP = Gauge("inspect_camera_up", "1 while the camera's source delivers frames", ["camera"],
                  registry=REGISTRY)
CAMERA_FAILURES_TOTAL = Counter(
    "inspect_camera_failures_total",
    "Source failures per camera and class (refused|timeout|auth|not_found|not_video|no_device|"
    "decoder_crashed|stalled|ended|error)", ["camera", "kind"], registry=REGISTRY,
)
CAMERA_RECOVERIES_TOTAL = Counter(
    "inspect_camera_recoveries_total", "Frames flowing again after a source failure", ["camera"],
    registry=REGISTRY,
)
FRAMES_TOTAL = Counter(
    "inspect_frames_total", "Frames per camera and stage (captured|inspected|committed|journaled|dropped)",
    ["camera", "stage"], registry=REGISTRY,
)
FRAMES_DROPPED_TOTAL = Counter(
    "inspect_frames_dropped_total", "Frames dropped by a drop-oldest queue", ["camera"], registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("inspect_queue_depth", "Frames waiting for inference", ["camera"], registry=REGISTRY)
PIPELINE_LATENCY_SECONDS = Histogram(
    "inspect_pipeline_latency_seconds", "Capture to database commit", registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
BATCH_SIZE = Histogram("inspect_batch_size", "Frames per inference micro-batch", registry=REGISTRY,
                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
DB_WRITE_SECONDS = Histogram(
    "inspect_db_write_seconds", "One batched commit of the ingest writer", registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
JOURNAL_PENDING = Gauge("inspect_journal_pending", "Results in the on-disk journal awaiting the database",
                        registry=REGISTRY)
DB_UP = Gauge("inspect_db_up", "1 while the database answers (its circuit breaker is closed)",
              registry=REGISTRY)
DB_UP.set(1)
ALARMS_RAISED_TOTAL = Counter("inspect_alarms_raised_total", "Alarms raised by the cameras file's rules",
                              ["rule", "condition"], registry=REGISTRY)
ALARM_ACTIVE = Gauge("inspect_alarm_active", "1 while the rule's alarm is raised and not acknowledged",
                     ["rule"], registry=REGISTRY)


class CameraLabels:
    """Values of the ``camera`` label, so that no caller can grow the series without bound: a camera of
    the cameras file (``register``) has its own value; another camera id (an upload's, chosen by the
    caller) gets its own value while fewer than ``cap`` such ids have one, and ``other`` after that; a
    frame without a camera id gets ``""``. ``configure`` at service start sets the cap and starts over."""

    OTHER = "other"

    def __init__(self, cap: int) -> None:
        self._lock = threading.Lock()
        self.cap = cap
        self._registered: set[str] = set()
        self._unregistered: set[str] = set()

    def configure(self, cap: int) -> None:
        with self._lock:
            self.cap = cap
            self._registered.clear()
            self._unregistered.clear()

    def register(self, camera_id: str) -> None:
        with self._lock:
            self._registered.add(camera_id)

    def of(self, camera_id: str | None) -> str:
        if not camera_id:
            return ""
        with self._lock:
            if camera_id in self._registered or camera_id in self._unregistered:
                return camera_id
            if len(self._unregistered) < self.cap:
                self._unregistered.add(camera_id)
                return camera_id
        return self.OTHER


CAMERA_LABELS = CameraLabels(cap=100)


def camera_label(camera_id: str | None) -> str:
    """The ``camera`` label value of ``camera_id`` (``CameraLabels.of``)."""
    return CAMERA_LABELS.of(camera_id)


# -- storage and retention (app/storage_health.py, app/retention.py); deploy/ alerts use these names ------
DISK_FREE_BYTES = Gauge("inspect_disk_free_bytes", "Free bytes on the data folder's file system",
                        registry=REGISTRY)
DISK_TOTAL_BYTES = Gauge("inspect_disk_total_bytes", "Size of the data folder's file system, bytes",
                         registry=REGISTRY)
IMAGE_STORE_BYTES = Gauge("inspect_image_store_bytes", "Bytes of stored images, by camera and kind "
                          "(frame|crop)", ["camera", "kind"], registry=REGISTRY)
IMAGE_STORE_FILES = Gauge("inspect_image_store_files", "Stored image files, by camera and kind (frame|crop)",
                          ["camera", "kind"], registry=REGISTRY)
PRUNED_TOTAL = Counter("inspect_pruned_total", "What the retention pruner deleted, by kind "
                       "(frame|crop|row) and reason (age|cap|watermark)", ["kind", "reason"],
                       registry=REGISTRY)
PRUNED_BYTES_TOTAL = Counter("inspect_pruned_bytes_total", "Image bytes the retention pruner deleted",
                             registry=REGISTRY)
IMAGES_SKIPPED_TOTAL = Counter(
    "inspect_images_skipped_total", "Images not written while their inspection was stored, by camera and "
    "reason (low_disk|write_failed)", ["camera", "reason"], registry=REGISTRY)
STORAGE_FAULT = Gauge("inspect_storage_fault", "1 while a storage fault holds, by kind "
                      "(database_file|read_only|disk_full)", ["kind"], registry=REGISTRY)

def set_model_info(version: str | None, provider: str | None) -> None:
    """Exactly one series: the model in use, or none when no model is loaded."""
    MODEL_INFO.clear()
    if version is not None and provider is not None:
        MODEL_INFO.labels(version=version, provider=provider).set(1)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

PART_COMMANDS_TOTAL = Counter(
    "inspect_part_commands_total",
    "The line's word on the part under a camera, by channel (api|mqtt|opcua) and outcome "
    "(set|ended|unchanged|refused: unknown camera, bad part id or malformed message)",
    ["via", "outcome"], registry=REGISTRY)
MQTT_CONNECTED = Gauge("inspect_mqtt_connected", "1 while the MQTT publisher is connected to its broker",
                       registry=REGISTRY)
MQTT_QUEUED = Gauge("inspect_mqtt_queued", "MQTT messages waiting to be loaded, sent or acknowledged",
                    registry=REGISTRY)
MQTT_PUBLISHED_TOTAL = Counter("inspect_mqtt_published_total", "MQTT messages acknowledged by the broker",
                               registry=REGISTRY)
VERDICTS_DROPPED_TOTAL = Counter(
    "inspect_verdicts_dropped_total",
    "provisional verdicts not announced (relay queue full; MQTT: broker away)",
    ["sink"], registry=REGISTRY)
MQTT_DROPPED_TOTAL = Counter("inspect_mqtt_dropped_total",
                             "MQTT messages dropped because the bounded queue was full", registry=REGISTRY)
