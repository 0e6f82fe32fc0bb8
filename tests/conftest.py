"""Shared fixtures: tiny real ONNX detectors built with onnx.helper, migrated databases (SQLite and,
when INSPECT_TEST_POSTGRES_URL is set, PostgreSQL), and the real app behind a TestClient."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.ingest.simulator import SAMPLE_DIR
from app.settings import DEFAULT_MODEL_PATH

REPO_ROOT = Path(__file__).resolve().parents[1]
NEU_DET_ENV = "INSPECT_TEST_NEU_DET"
# The full NEU-DET data set (1440 images, annotations, the train/val split): beside the repository
# unless INSPECT_TEST_NEU_DET points elsewhere. Tests that need it skip when it is absent.
NEU_DET = Path(os.environ.get(NEU_DET_ENV) or REPO_ROOT.parent / "shared" / "datasets" / "neu-det")
NEU_DET_MISSING = f"needs the full NEU-DET data set, not found at {NEU_DET} (set {NEU_DET_ENV})"
needs_neu_det = pytest.mark.skipif(not (NEU_DET / "images").is_dir(), reason=NEU_DET_MISSING)
# The 90-image sample shipped in the package (app/sample/neu-det): always there.
NEU_SAMPLE = SAMPLE_DIR
# The shipped detector, INT8 (the service default) and its FP32 twin, in this checkout.
SHIPPED_INT8 = REPO_ROOT / "models" / "weights" / DEFAULT_MODEL_PATH.name
SHIPPED_FP32 = SHIPPED_INT8.with_name(SHIPPED_INT8.name.replace("-int8", ""))
NEU_NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
PG_ENV = "INSPECT_TEST_POSTGRES_URL"
LEFTOVER_THREADS_WAIT_S = 30.0


# -- the run ends: nothing the tests started keeps the process alive -------------------------------
def leftover_threads(wait_s: float) -> list[threading.Thread]:
    """Non-daemon threads still running after up to ``wait_s`` seconds. Such a thread keeps the
    interpreter from exiting, so CI would hang after a green run; the thread pools of
    ``concurrent.futures`` are left out: they are joined at exit."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and not t.daemon and t.is_alive()
                 and not t.name.startswith(("ThreadPoolExecutor", "asyncio_"))]
        if not alive or time.monotonic() >= deadline:
            return alive
        alive[0].join(max(0.0, min(1.0, deadline - time.monotonic())))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    alive = leftover_threads(LEFTOVER_THREADS_WAIT_S)
    if alive:
        names = ", ".join(sorted(t.name for t in alive))
        print(f"\nnon-daemon threads outlived the tests (they keep the process alive): {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# -- tiny ONNX detectors --------------------------------------------------------------------------
def build_detector_onnx(
    path: Path,
    predictions: np.ndarray,
    *,
    layout: str = "yolov5",
    imgsz: tuple[int, int] = (64, 64),
    batch: int | None = None,
    brightness_column: int | None = None,
    brightness_rows: Sequence[int] | None = None,
    metadata: Mapping[str, Any] | None = None,
    raw_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a real ONNX detector whose output is ``predictions`` (one image's raw output, shape
    [A, 5+nc] for yolov5 or [4+nc, A] for ultralytics) repeated for every image of the batch.

    With ``brightness_column`` set, that column (row for ultralytics) of the anchors in
    ``brightness_rows`` (default all) additionally gets the mean of the input tensor added, so a
    bright frame scores higher than a dark one. ``metadata`` values are
    JSON-encoded into metadata_props; ``raw_metadata`` is written verbatim."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = imgsz
    preds = np.asarray(predictions, dtype=np.float32)[None]  # [1, ...]
    mask = np.zeros_like(preds)
    if brightness_column is not None:
        rows = list(brightness_rows) if brightness_rows is not None else slice(None)
        if layout == "yolov5":
            mask[0, rows, brightness_column] = 1.0
        else:
            mask[0, brightness_column, rows] = 1.0
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean4", "shape3"], ["mean3"]),
        helper.make_node("Mul", ["mask", "mean3"], ["scaled"]),  # [N, A, C]
        helper.make_node("Add", ["preds", "scaled"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(preds, "preds"),
        numpy_helper.from_array(mask, "mask"),
        numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "shape3"),
    ]
    n_dim: int | str = batch if batch is not None else "N"
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [n_dim, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [n_dim, *preds.shape[1:]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="defect-inspect-tests")
    model.ir_version = 8
    props = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    props.update(raw_metadata or {})
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def standard_metadata(names: Sequence[str] = NEU_NAMES, imgsz: tuple[int, int] = (64, 64),
                      layout: str = "yolov5", version: str = "tiny-test-1") -> dict[str, Any]:
    return {"names": list(names), "imgsz": list(imgsz), "stride": [8, 16, 32], "layout": layout,
            "version": version, "task": "detect", "quantization": "fp32"}


def brightness_predictions(nc: int = len(NEU_NAMES)) -> np.ndarray:
    """Two yolov5 rows in a 64x64 input: a 'patches' box whose objectness is the frame's mean
    brightness (added by the graph), and a 'scratches' box that never passes 0.25."""
    preds = np.zeros((2, 5 + nc), np.float32)
    preds[0, :4] = [32, 32, 20, 10]  # cx, cy, w, h (input pixels)
    preds[0, 5 + 2] = 0.9  # class 'patches'
    preds[1, :4] = [10, 10, 6, 6]
    preds[1, 4] = 0.1
    preds[1, 5 + 5] = 0.5
    return preds


@pytest.fixture
def make_detector_model(tmp_path: Path):
    """Factory: ``make_detector_model(predictions, **build_detector_onnx kwargs) -> Path``."""
    counter = iter(range(10_000))

    def make(predictions: np.ndarray, name: str | None = None, **kwargs: Any) -> Path:
        return build_detector_onnx(tmp_path / "models" / (name or f"m{next(counter)}.onnx"), predictions,
                                   **kwargs)

    return make


def strip_recall(frames: Sequence, detect) -> float:
    """Share of the simulator's truth boxes (>= 90 % inside the frame) that ``detect(image)`` finds
    (same class, IoU >= 0.5, each box once), over ``frames`` = [(image, truth), ...]."""
    from app.inference.postprocess import match_detections

    found = total = 0
    for image, truth in frames:
        truth = [t for t in truth if t.visible >= 0.9]
        total += len(truth)
        d = detect(image)
        boxes = np.array([[t.x1, t.y1, t.x2, t.y2] for t in truth], np.float32).reshape(-1, 4)
        classes = np.array([t.class_id for t in truth], int)
        found += match_detections(boxes, classes, d.xyxy, d.class_id, iou=0.5)
    return found / max(total, 1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x64 yolov5-layout detector with the NEU-DET class names: bright frames are NG
    ('patches' box in the middle), dark frames OK."""
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return build_detector_onnx(path, brightness_predictions(), brightness_column=4,
                               brightness_rows=[0], metadata=standard_metadata())


# -- databases ------------------------------------------------------------------------------------
def _fresh_postgres_db(base_url: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"inspect_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once per backend: a SQLite file, and a fresh PostgreSQL database (skipped
    with the reason when INSPECT_TEST_POSTGRES_URL is not set)."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'inspect.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set (run through .ci/run, or point it at a PostgreSQL server)")
    url, drop = _fresh_postgres_db(base)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """A database migrated to head through Alembic (the same path `defect-inspect db upgrade` takes)."""
    from app.db.migrate import upgrade

    upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture
def db(database_url: str) -> Iterator[Any]:
    """A ``Database`` on the migrated database (SQLite, and PostgreSQL when configured)."""
    from app.db.session import Database

    database = Database(database_url)
    yield database
    database.dispose()


# -- the app ----------------------------------------------------------------------------------------
def shift_start_far_from_now() -> str:
    """One shift a day, starting 12 hours from now (UTC): no test that counts the current shift runs
    across a shift change, whatever the time of day CI runs at."""
    return f"{datetime.now(UTC) + timedelta(hours=12):%H:%M}"


@pytest.fixture
def app_settings(database_url: str, tiny_model_path: Path, tmp_path: Path):
    from app.settings import Settings

    return Settings(database_url=database_url, model_path=tiny_model_path, data_dir=tmp_path / "data",
                    image_policy="ng", auth_enabled=False, providers=["cpu"], intra_op_threads=1,
                    shifts=[shift_start_far_from_now()])


@pytest.fixture
def client(app_settings) -> Iterator[Any]:
    """The real app (create_app + lifespan) on a migrated database, with the tiny model."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(app_settings)) as c:
        yield c


@pytest.fixture(scope="session")
def neu_det_dir() -> Path:
    """The full NEU-DET data set; the test skips (with the reason) when it is absent."""
    if not (NEU_DET / "images").is_dir():
        pytest.skip(NEU_DET_MISSING)
    return NEU_DET


@pytest.fixture(scope="session")
def neu_sample() -> Path:
    """The NEU-DET sample shipped in the package: images/, labels/, data.yaml, val.txt."""
    return NEU_SAMPLE


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Four small PNG frames of different brightness, named 000.png ... 003.png."""
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 80, 3), 40 * i, np.uint8))
    return folder


@pytest.fixture(autouse=True)
def _fresh_storage_health() -> Iterator[None]:
    """The process-wide storage health (app.storage_health.HEALTH) starts each test clean: a write
    failure or a low-disk setting of one test must not skip the images of the next."""
    from app.storage_health import HEALTH, StorageOptions

    HEALTH.reset()
    HEALTH.options = StorageOptions()
    yield
    HEALTH.reset()
    HEALTH.options = StorageOptions()
