"""The service's one assembly: the engine factory (settings -> detector, with named overrides) and
the Service built for ``serve`` from the settings alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine_factory import build_engine, load_engine
from app.inference import ModelLoadError
from app.service import Role, running_service


def _intra_threads(engine) -> int:
    return engine.session.get_session_options().intra_op_num_threads


def test_engine_factory_takes_the_settings_and_named_overrides(app_settings, tiny_model_path: Path) -> None:
    settings = app_settings.model_copy(update={"intra_op_threads": 2})
    engine = build_engine(settings)
    assert engine.model_path == tiny_model_path and engine.provider == "CPUExecutionProvider"
    assert _intra_threads(engine) == 2
    assert _intra_threads(build_engine(settings, intra_op_threads=1)) == 1


def test_a_missing_model_names_the_setting(app_settings, tmp_path: Path) -> None:
    absent = app_settings.model_copy(update={"model_path": tmp_path / "absent.onnx"})
    with pytest.raises(ModelLoadError, match=r"not found: .*absent\.onnx \(set INSPECT_MODEL_PATH"):
        build_engine(absent)
    assert load_engine(absent) == (None, f"model file not found: {tmp_path / 'absent.onnx'} "
                                         "(set INSPECT_MODEL_PATH or export a model)")
    with pytest.raises(ModelLoadError, match="absent.onnx$"):  # an explicit file: no settings hint
        build_engine(app_settings, model_path=tmp_path / "absent.onnx")


def test_serve_assembly_without_cameras(app_settings) -> None:
    with running_service(app_settings) as service:
        assert service.engine is not None and service.engine_error is None
        assert service.pipeline is None
        # uploads still have a journal (the service's own writer) for a database outage
        assert service.writer is service.own_writer and service.journal is not None
        assert service.journal.dir == app_settings.data_dir / "journal"
        assert service.ingest_error == "no cameras file (INSPECT_CAMERAS_FILE)"
        assert service.webhooks is not None
    with pytest.raises(ValueError, match="ingest role"):
        running_service(app_settings, Role.INGEST).__enter__()
