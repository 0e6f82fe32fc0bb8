"""`bench line-latency` end to end on a short run with the tiny model: a real Mosquitto, the ingest
service with MQTT and OPC UA, and the two subscribing clients; every frame counted reaches both."""

from __future__ import annotations

import pytest
from mqtt_helpers import MOSQUITTO, MOSQUITTO_MISSING

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (the `mqtt` extra)")
pytest.importorskip("asyncua", reason="asyncua is not installed (the `opcua` extra)")

from app.bench.line_latency import LineLatencyOptions, run_line_latency, table  # noqa: E402
from app.errors import InvalidInput, Unavailable  # noqa: E402


def test_a_short_run_measures_both_paths(tiny_model_path, neu_sample) -> None:
    if MOSQUITTO is None:
        pytest.skip(MOSQUITTO_MISSING)
    source = f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120"
    result = run_line_latency(LineLatencyOptions(model=tiny_model_path, source=source, seconds=4.0,
                                                 warmup_s=1.0, mosquitto=MOSQUITTO))
    mqtt, opcua = result["capture_to_mqtt"], result["capture_to_opcua"]
    assert result["frames"] > 0 and mqtt["count"] == result["frames"]
    assert opcua["count"] + result["opcua_missed"] == result["frames"] and opcua["count"] > 0
    assert 0 < mqtt["p50_ms"] <= mqtt["p99_ms"] <= mqtt["max_ms"]
    assert result["capture_to_inference_end"]["p50_ms"] <= mqtt["p50_ms"]
    assert result["capture_to_commit"]["count"] > 0
    lines = table(result).splitlines()
    assert lines[0].split() == ["path", "count", "p50", "ms", "p99", "ms", "max", "ms"]
    assert lines[2].startswith("capture to mqtt")


def test_bad_options_are_refused_before_anything_starts(tiny_model_path, tmp_path) -> None:
    with pytest.raises(InvalidInput, match="--seconds"):
        run_line_latency(LineLatencyOptions(model=tiny_model_path, seconds=1.0, warmup_s=2.0))
    with pytest.raises(InvalidInput, match="no such file"):
        run_line_latency(LineLatencyOptions(model=tmp_path / "missing.onnx"))
    with pytest.raises(Unavailable, match="mosquitto"):
        run_line_latency(LineLatencyOptions(model=tiny_model_path, mosquitto=str(tmp_path / "nothing")))
