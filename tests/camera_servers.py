"""Real cameras on loopback for the drills (tests/test_camera_drills.py, scripts/camera_drill.py): an
RTSP server (Debian's gst-rtsp-server through the system Python's GObject bindings) and an MJPEG-over-
HTTP server, each its own process that a drill can kill and bring back on the same port, or freeze with
its sockets open (SIGSTOP)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
