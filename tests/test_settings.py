"""Settings: INSPECT_ variables, and a bad value stops start-up naming the variable."""

from __future__ import annotations

import pytest

from app.cli import main as cli_main
from app.settings import DEFAULT_MODEL_PATH, PACKAGE_ROOT, SettingsError, load_settings


def test_defaults_and_environment(monkeypatch, tmp_path):
    for key in ("INSPECT_PROVIDERS", "INSPECT_IMAGE_POLICY", "INSPECT_DATABASE_URL", "INSPECT_MODEL_PATH"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings()
    assert s.database_url == "sqlite:///./data/inspect.db" and s.image_policy == "ng" and s.providers == []
    assert s.model_path == DEFAULT_MODEL_PATH and DEFAULT_MODEL_PATH.is_relative_to(PACKAGE_ROOT)
    assert s.auth_enabled is True

    monkeypatch.setenv("INSPECT_PROVIDERS", "cuda, CPUExecutionProvider")
    monkeypatch.setenv("INSPECT_IMAGE_POLICY", "Always")
    monkeypatch.setenv("INSPECT_MAX_UPLOAD_MB", "2.5")
    monkeypatch.setenv("INSPECT_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.providers == ["cuda", "CPUExecutionProvider"] and s.image_policy == "always"
    assert s.max_upload_bytes == int(2.5 * 1024 * 1024) and s.images_dir == tmp_path / "images"


@pytest.mark.parametrize(("name", "value"), [
    ("INSPECT_MAX_UPLOAD_MB", "lots"), ("INSPECT_MAX_UPLOAD_MB", "0"), ("INSPECT_IMAGE_POLICY", "sometimes"),
    ("INSPECT_CONF_THRESHOLD", "1.5"), ("INSPECT_INTRA_OP_THREADS", "-1"), ("INSPECT_AUTH_ENABLED", "maybe"),
    ("INSPECT_DATABASE_URL", "mysql://db/x"), ("INSPECT_MAX_PIXELS", "many"),
])
def test_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_serve_refuses_to_start_on_a_bad_value(monkeypatch, capsys):
    monkeypatch.setenv("INSPECT_IOU_THRESHOLD", "high")
    assert cli_main(["serve", "--port", "8123"]) == 2
    err = capsys.readouterr().err
    assert "INSPECT_IOU_THRESHOLD" in err and "high" in err
