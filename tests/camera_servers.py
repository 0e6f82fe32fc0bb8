"""Real cameras on loopback for the drills (tests/test_camera_drills.py, scripts/camera_drill.py): an
RTSP server (Debian's gst-rtsp-server through the system Python's GObject bindings) and an MJPEG-over-
HTTP server, each its own process that a drill can kill and bring back on the same port, or freeze with
its sockets open (SIGSTOP); and :class:`Rig`, cameras captured the way the pipeline captures them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.ingest.capture import CameraRunner, Capture
from app.ingest.config import CameraConfig
from app.ingest.queues import FrameHub
from app.ingest.sources import FFmpegSource, Frame, derive_frame_uid, make_source
from app.inspection import CameraContext

SERVERS = Path(__file__).resolve().parent / "servers"
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtsp_unavailable() -> str | None:
    """Why the RTSP server cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON}"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import GstRtspServer; from gi.repository import Gst; Gst.init(None); "
         "assert Gst.ElementFactory.find('x264enc'), 'x264enc'"],
        capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return "gst-rtsp-server with x264enc for the system Python is missing: " + probe.stderr.strip()[-200:]
    return None


class CameraServer:
    """One camera server process on a fixed port: ``start()`` (and again after ``kill()``), ``freeze()``
    / ``thaw()`` (SIGSTOP/SIGCONT: the stream stalls with its sockets open), ``kill()`` (SIGKILL)."""

    def __init__(self, command: list[str], port: int, url: str) -> None:
        self.command, self.port, self.url = command, port, url
        self.proc: subprocess.Popen[str] | None = None

    @classmethod
    def rtsp(cls, fps: int = 30, width: int = 640, height: int = 480) -> CameraServer:
        port = free_port()
        return cls([SYSTEM_PYTHON, str(SERVERS / "rtsp_server.py"), "--port", str(port), "--fps", str(fps),
                    "--width", str(width), "--height", str(height)], port, f"rtsp://127.0.0.1:{port}/cam")

    @classmethod
    def mjpeg(cls, fps: float = 25.0, user: str = "", password: str = "") -> CameraServer:
        port = free_port()
        creds = f"{user}:{password}@" if password else ""
        return cls([sys.executable, str(SERVERS / "mjpeg_server.py"), "--port", str(port), "--fps", str(fps),
                    "--user", user, "--password", password], port, f"http://{creds}127.0.0.1:{port}/stream")

    def start(self, timeout: float = 60.0) -> None:
        env = dict(os.environ)
        if self.command[0] == SYSTEM_PYTHON:  # Debian's Python, not the virtual environment's modules
            env.pop("PYTHONPATH", None)
        end = time.monotonic() + timeout
        while True:  # the port of a killed server may take a moment to be free again
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, env=env)
            assert self.proc.stdout is not None
            if self.proc.stdout.readline().strip() == "ready":
                return
            self.proc.wait()
            if time.monotonic() > end:
                raise RuntimeError(f"camera server did not start: {self.command}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> CameraServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg") is not None


class Rig:
    """Cameras captured the way the pipeline captures them (a runner and its thread per camera, the
    watchdog), with their frames drained from the hub as the inference workers would."""

    def __init__(self, cameras: list[dict], on_frame: Callable[[str, Frame], None] | None = None) -> None:
        self.hub = FrameHub()
        self.on_frame = on_frame
        self.runners: dict[str, CameraRunner] = {}
        for keys in cameras:
            cfg = CameraConfig.model_validate(keys)
            self.runners[cfg.id] = CameraRunner(cfg, make_source(cfg), self.hub,
                                                CameraContext(camera_id=cfg.id))
        self.capture = Capture(list(self.runners.values()))
        self.uids: dict[str, set[str]] = {cid: set() for cid in self.runners}
        self.frames: dict[str, int] = dict.fromkeys(self.runners, 0)  # frames drained from the hub
        self.shapes: set[tuple[int, ...]] = set()
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._drain_hub, daemon=True)

    def _drain_hub(self) -> None:
        while not self._stop.is_set():
            for job in self.hub.get_batch(64, 0.0, idle_timeout=0.05):
                self.uids[job.camera.cfg.id].add(derive_frame_uid(job.camera.cfg.id, job.frame.origin))
                self.frames[job.camera.cfg.id] += 1
                self.shapes.add(job.frame.image.shape)
                if self.on_frame is not None:
                    self.on_frame(job.camera.cfg.id, job.frame)

    def state(self, cid: str) -> dict:
        return self.runners[cid].state.snapshot()

    def captured(self, cid: str) -> int:
        return self.runners[cid].state.captured

    def decoder_pid(self, cid: str) -> int | None:
        source = self.runners[cid].source
        assert isinstance(source, FFmpegSource)
        return source.decoder_pid

    def __enter__(self) -> Rig:
        self.capture.start()
        self._drain.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.capture.stop(time.monotonic() + 10)
        deadline = time.monotonic() + 5  # the frames captured before the stop, drained as workers would
        while self.hub.depth() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._drain.join(5)
        assert not self.capture.running(), "a capture thread did not stop"
