"""A camera's decoder in its own process: FFmpeg reads the network stream or capture device and pipes
decoded frames to the service as YUV4MPEG (a text header with the size, then raw I420 frames, half the
bytes of BGR); the service turns them into BGR. A decoder that crashes or hangs takes only its own
process down: the watchdog kills it (SIGKILL, safe at any moment, unlike releasing a capture under a
read) and the camera starts a new one. Why this design over in-process OpenCV: docs/cameras.md."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from app.ingest.config import DecoderConfig
from app.ingest.failures import FailureKind, classify_decoder_output

log = logging.getLogger(__name__)

DEVICE_PREFIX = "/dev/video"
_STDERR_LINES = 30  # the decoder's last words kept for classifying its failure
_HEADER_MAX = 4096


class DecoderFailed(Exception):
    """The decoder process ended or could not start; ``kind`` says why."""

    def __init__(self, message: str, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind = kind


def ffmpeg_exe() -> str:
    """The FFmpeg binary: ``IMAGEIO_FFMPEG_EXE`` if set, else the one the imageio-ffmpeg wheel ships (so a
    fresh virtual environment can decode), else ``ffmpeg`` on the PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found is None:
            raise DecoderFailed("no FFmpeg: install imageio-ffmpeg or Debian's ffmpeg",
                                FailureKind.ERROR) from None
        return found


def device_path(source: str | int) -> str | None:
    """The capture device a source names (a USB index or ``/dev/videoN``), else None."""
    if isinstance(source, int):
        return f"{DEVICE_PREFIX}{source}"
    if source.strip().isdigit():
        return f"{DEVICE_PREFIX}{int(source)}"
    if source.startswith(DEVICE_PREFIX):
        return source
    return None


def _hwaccel_args(cfg: DecoderConfig) -> list[str]:
    device = cfg.hwaccel_device
    if cfg.hwaccel == "vaapi":
        return ["-hwaccel", "vaapi"] + (["-hwaccel_device", device] if device else [])
    if cfg.hwaccel == "qsv":
        return (["-hwaccel", "qsv"] + (["-qsv_device", device] if device else [])
                + ["-c:v", f"{cfg.codec}_qsv"])
    if cfg.hwaccel == "nvdec":
        return ["-hwaccel", "cuda"] + (["-hwaccel_device", device] if device else [])
    if cfg.hwaccel == "jetson":
        return ["-c:v", f"{cfg.codec}_nvmpi"]
    return []


def ffmpeg_args(source: str | int, cfg: DecoderConfig, threads: int, io_timeout_s: float,
                exe: str = "ffmpeg") -> list[str]:
    """The decoder's command line for a stream URL or capture device: input options (transport, socket
    timeouts as a backstop behind the watchdog, stream analysis time, decoder threads, hardware
    acceleration, the camera's own), then the first
    video stream as YUV4MPEG I420 on stdout. Frames are never re-timed or dropped by FFmpeg."""
    args = [exe, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
    device = device_path(source)
    io_us = str(int(io_timeout_s * 1_000_000))
    if device is not None:
        args += ["-f", "v4l2"]
        target = device
    else:
        target = str(source)
        scheme = target.split("://", 1)[0].lower()
        if scheme in ("rtsp", "rtsps"):
            args += ["-rtsp_transport", cfg.transport, "-timeout", io_us]
        elif scheme in ("http", "https", "tcp"):
            args += ["-rw_timeout", io_us]
    args += ["-analyzeduration", str(int(cfg.analyze_s * 1_000_000))]
    if threads > 0:
        args += ["-threads", str(threads)]
    args += _hwaccel_args(cfg)
    args += list(cfg.input_args)
    args += ["-i", target, "-map", "0:v:0", "-an", "-sn", "-dn",
             "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "pipe:1"]
    return args


_Y4M_SIZE = re.compile(rb" W(\d+) H(\d+)")


class DecoderProcess:
    """One running FFmpeg decoder. ``start()`` waits for the stream header, ``read()`` returns the next
    frame as BGR; both raise :class:`DecoderFailed`. ``kill()`` may be called from any thread."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.width = self.height = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed_as: tuple[FailureKind, str] | None = None
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._stderr_thread: threading.Thread | None = None
        self._frame_bytes = 0
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        try:
            proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True, bufsize=1 << 20)
        except OSError as exc:
            raise DecoderFailed(f"cannot start the decoder {self.args[0]}: {exc}", FailureKind.ERROR) from exc
        with self._lock:
            self._proc = proc
        assert proc.stderr is not None
        self._stderr_thread = threading.Thread(target=self._drain_stderr, args=(proc.stderr,),
                                               name=f"decoder-stderr-{proc.pid}", daemon=True)
        self._stderr_thread.start()
        assert proc.stdout is not None
        header = proc.stdout.readline(_HEADER_MAX)
        match = _Y4M_SIZE.search(header)
        if not header.startswith(b"YUV4MPEG2") or match is None:
            raise self._failure("")
        self.width, self.height = int(match.group(1)), int(match.group(2))
        if self.width % 2 or self.height % 2:
            raise DecoderFailed(f"odd frame size {self.width}x{self.height} is not supported",
                                FailureKind.NOT_VIDEO)
        self._frame_bytes = self.width * self.height * 3 // 2

    def read(self) -> np.ndarray:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise DecoderFailed("the decoder is not running", FailureKind.ERROR)
        marker = proc.stdout.readline(_HEADER_MAX)
        if not marker.startswith(b"FRAME"):
            raise self._failure("the stream ended")
        data = proc.stdout.read(self._frame_bytes)
        if data is None or len(data) < self._frame_bytes:
            raise self._failure("the stream ended")
        i420 = np.frombuffer(data, np.uint8).reshape(self.height * 3 // 2, self.width)
        return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)

    def kill(self, kind: FailureKind, message: str) -> None:
        """Stop the decoder now (the watchdog, or close); the blocked read sees the end of the pipe and
        fails with this kind and message."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                return
            if self._killed_as is None:
                self._killed_as = (kind, message)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # Popen reaps under its own lock: never a recycled pid

    def close(self) -> None:
        """Kill the process if it runs, reap it, close its pipes (the reading thread only)."""
        self.kill(FailureKind.ENDED, "the decoder was closed")
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)

    def _drain_stderr(self, pipe: IO[bytes]) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self._stderr.append(line)
                    log.debug("decoder %s: %s", self.pid, line)
        except (OSError, ValueError):  # the pipe was closed
            pass

    def _failure(self, what: str) -> DecoderFailed:
        """Why the decoder stopped: killed by us, crashed by a signal, or what FFmpeg said."""
        proc = self._proc
        rc = proc.wait() if proc is not None else None
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)
        said = list(self._stderr)
        if self._killed_as is not None:
            kind, message = self._killed_as
            return DecoderFailed(message, kind)
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
            return DecoderFailed(f"decoder crashed ({name})", FailureKind.DECODER_CRASHED)
        kind = classify_decoder_output(said)
        detail = said[-1] if said else f"exit code {rc}"
        if kind is None:
            kind = FailureKind.ENDED if rc == 0 else FailureKind.ERROR
        return DecoderFailed(f"{what}: {detail}" if what else detail, kind)


def device_missing(source: str | int) -> str | None:
    """The capture device a source names when it does not exist, else None."""
    device = device_path(source)
    return device if device is not None and not Path(device).exists() else None
