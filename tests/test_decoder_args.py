"""The FFmpeg decoder command lines built from the cameras file's ``decoder`` keys (hardware decoding
cannot run on CI machines: its arguments are what is checked), and FFmpeg's words mapped to failure
classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main as cli_main
from app.ingest.config import CamerasConfigError, DecoderConfig, parse_cameras
from app.ingest.decoder import device_path, ffmpeg_args
from app.ingest.failures import FailureKind, classify_decoder_output

TAIL = ["-map", "0:v:0", "-an", "-sn", "-dn", "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "pipe:1"]
HEAD = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]


def decoder(**keys) -> DecoderConfig:
    return DecoderConfig.model_validate(keys)


def test_default_rtsp_decoder_is_cpu_over_tcp_with_a_socket_timeout_behind_the_watchdog() -> None:
    args = ffmpeg_args("rtsp://cam/s", decoder(), threads=1, io_timeout_s=12)
    assert args == HEAD + ["-rtsp_transport", "tcp", "-timeout", "12000000", "-analyzeduration", "500000",
                           "-threads", "1", "-i", "rtsp://cam/s"] + TAIL


def test_udp_transport_analysis_time_and_own_input_options() -> None:
    keys = {"transport": "udp", "analyze_s": 0, "input_args": ["-fflags", "nobuffer"]}
    args = ffmpeg_args("rtsp://cam/s", decoder(**keys), threads=0, io_timeout_s=3.5)
    assert args == HEAD + ["-rtsp_transport", "udp", "-timeout", "3500000", "-analyzeduration", "0",
                           "-fflags", "nobuffer", "-i", "rtsp://cam/s"] + TAIL  # threads 0: FFmpeg decides


def test_http_streams_get_a_read_write_timeout_and_devices_the_v4l2_input() -> None:
    assert ffmpeg_args("http://cam/video.mjpg", decoder(), 1, 5)[6:8] == ["-rw_timeout", "5000000"]
    for source in (2, "2", "/dev/video2"):
        args = ffmpeg_args(source, decoder(), 1, 5)
        assert args[6:8] == ["-f", "v4l2"] and args[args.index("-i") + 1] == "/dev/video2"
        assert "-rw_timeout" not in args and "-timeout" not in args
    assert device_path("rtsp://cam/s") is None and device_path("/data/line.mp4") is None


@pytest.mark.parametrize(("keys", "expected"), [
    ({"hwaccel": "vaapi"}, ["-hwaccel", "vaapi"]),
    ({"hwaccel": "vaapi", "hwaccel_device": "/dev/dri/renderD129"},
     ["-hwaccel", "vaapi", "-hwaccel_device", "/dev/dri/renderD129"]),
    ({"hwaccel": "qsv", "hwaccel_device": "/dev/dri/renderD128"},
     ["-hwaccel", "qsv", "-qsv_device", "/dev/dri/renderD128", "-c:v", "h264_qsv"]),
    ({"hwaccel": "qsv", "codec": "hevc"}, ["-hwaccel", "qsv", "-c:v", "hevc_qsv"]),
    ({"hwaccel": "nvdec"}, ["-hwaccel", "cuda"]),
    ({"hwaccel": "nvdec", "hwaccel_device": "1"}, ["-hwaccel", "cuda", "-hwaccel_device", "1"]),
    ({"hwaccel": "jetson"}, ["-c:v", "h264_nvmpi"]),
    ({"hwaccel": "jetson", "codec": "hevc"}, ["-c:v", "hevc_nvmpi"]),
])
def test_hardware_decoding_arguments_come_right_before_the_camera_s_own(keys: dict,
                                                                         expected: list) -> None:
    args = ffmpeg_args("rtsp://cam/s", decoder(input_args=["-x", "y"], **keys), 1, 10)
    start = args.index("-threads") + 2
    assert args[start:args.index("-i")] == expected + ["-x", "y"]


def test_decoder_keys_are_checked_with_file_line_and_key() -> None:
    cfg = parse_cameras("cameras:\n  - id: a\n    source: rtsp://cam/s\n")
    assert cfg.cameras[0].decoder == DecoderConfig()
    assert cfg.cameras[0].decoder.hwaccel == "none"  # CPU decoding unless asked
    with pytest.raises(CamerasConfigError, match=r"c.yaml:5: cameras\[0\]\.decoder\.hwaccel: Input should"):
        parse_cameras("cameras:\n  - id: a\n    source: rtsp://cam/s\n    decoder:\n      hwaccel: cuda\n",
                      "c.yaml")
    with pytest.raises(CamerasConfigError, match=r"c.yaml:4: cameras\[0\]\.decoder\.transprt: unknown key"):
        parse_cameras("cameras:\n  - id: a\n    decoder:\n      transprt: udp\n    source: rtsp://cam/s\n",
                      "c.yaml")


@pytest.mark.parametrize(("line", "kind"), [
    ("Error opening input files: Connection refused", FailureKind.REFUSED),
    ("Server returned 401 Unauthorized (authorization failed)", FailureKind.AUTH),
    ("method DESCRIBE failed: 404 Not Found", FailureKind.NOT_FOUND),
    ("Error opening input files: Invalid data found when processing input", FailureKind.NOT_VIDEO),
    ("Stream map '0:v:0' matches no streams.", FailureKind.NOT_VIDEO),
    ("Connection to tcp://10.0.0.9:554 failed: Connection timed out", FailureKind.TIMEOUT),
    ("/dev/video3: No such file or directory", FailureKind.NO_DEVICE),
    ("something else entirely", None),
])
def test_decoder_words_name_the_failure_class(line: str, kind: FailureKind | None) -> None:
    assert classify_decoder_output(["a first line", line]) == kind


def test_ingest_check_warns_about_capture_devices_this_machine_lacks(tmp_path: Path, tiny_model_path: Path,
                                                                     monkeypatch, capsys) -> None:
    missing = next(n for n in range(40, 100) if not Path(f"/dev/video{n}").exists())
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f"cameras:\n  - id: net\n    source: rtsp://cam/s\n"
                    f"  - id: usb\n    line: l1\n    source: {missing}\n"
                    f"  - id: spare\n    enabled: false\n    source: /dev/video{missing}\n")
    monkeypatch.setenv("INSPECT_MODEL_PATH", str(tiny_model_path))
    assert cli_main(["ingest", "--cameras", str(cams), "--check"]) == 0  # valid: the camera retries
    out = capsys.readouterr()
    assert out.out.strip() == f"{cams}: ok"
    assert out.err.strip().splitlines() == [
        f"warning: {cams}:6: cameras[1].source: no device /dev/video{missing} on this machine (camera 'usb' "
        "retries until it appears)"]
