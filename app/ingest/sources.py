"""Frame sources: OpenCV VideoCapture (RTSP, HTTP/MJPEG, USB index, video file), an image folder and
the production-line simulator. One interface: ``open()``, ``read() -> Frame | None``, ``close()``;
finite sources that can go on where they stood (video files, folders) also ``position``,
``resume_key()`` and ``seek()`` for their checkpoint (app.ingest.checkpoints).

``read()`` returns None at the end of a finite stream (file, folder, simulator with ``seconds``) and
raises :class:`SourceError` when a stream breaks; the capture thread then reconnects. ``live`` sources
are never finished: their end of stream is a failure too.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np
from pydantic import ValidationError

from app.ingest.config import CameraConfig, CamerasConfigError, DecoderConfig, SimulatorConfig
from app.ingest.decoder import DecoderFailed, DecoderProcess, device_path, ffmpeg_args, ffmpeg_exe
from app.ingest.failures import FailureKind
from app.ingest.motion import MotionSample
from app.ingest.parts import PartStamp
from app.ingest.simulator import IMAGE_SUFFIXES, StripSimulator, TruthBox
from app.vocabulary import utcnow

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")


class SourceError(Exception):
    """The source failed (cannot open, stream broke); the capture thread reconnects. ``kind`` is the
    failure class shown in the cameras API, the log and the metrics."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.ERROR) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Frame:
    image: np.ndarray  # BGR
    index: int  # frame number within the source
    captured_at: datetime  # wall clock (UTC) when the frame was taken
    t_capture: float  # time.perf_counter() at capture, for latency
    truth: list[TruthBox] | None = None  # simulator ground truth
    name: str | None = None  # file name for folder sources
    meta: dict = field(default_factory=dict)
    origin: str = ""  # where exactly the frame came from; the same frame read again has the same origin
    motion: MotionSample | None = None  # the material's motion at this frame (cameras with tracking)
    t_stream: float | None = None  # seconds on the stream's own timeline (a file, the simulator); None: live
    part: PartStamp | None = None  # the part under the camera when it was captured (app.ingest.parts)

    @property
    def t_motion(self) -> float:
        """The time speeds are measured in: the stream's own for a file (read faster or slower than it
        was filmed), the capture clock for a live source."""
        return self.t_capture if self.t_stream is None else self.t_stream


def file_identity(path: Path) -> str:
    """A file as it is now: its path, size and modification time (a changed file is another file)."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def live_origin(session: str, index: int, captured_at: datetime) -> str:
    """A live frame: the capture session (new at every connect, so positions that restart after a
    reconnect never collide), its position in the session and its capture time in nanoseconds."""
    return f"live:{session}:{index}:{int(captured_at.timestamp() * 1e9)}"


def derive_frame_uid(camera_id: str, origin: str) -> str:
    """The frame's uid: the same camera reading the same frame again (a restart, a replay) gets the same
    uid, so it is stored once. 32 hex characters, within the uid rules (1-64 of A-Z a-z 0-9 _ -)."""
    return hashlib.sha256(f"{camera_id}\n{origin}".encode()).hexdigest()[:32]


def _now() -> tuple[datetime, float]:
    return utcnow(), time.perf_counter()


def redact(url: str) -> str:
    """An URL without its password, for logs and the cameras API."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


class Source:
    live: bool = False

    def open(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self) -> Frame | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self, kind: FailureKind, message: str) -> None:
        """The watchdog (another thread) gives up on a blocked ``open()``/``read()``: make it raise
        SourceError(message, kind) soon. Sources whose ``close()`` is safe under a read close."""
        self.close()

    def describe(self) -> str:
        return type(self).__name__

    # -- checkpoints (app.ingest.checkpoints): finite sources that can go on where they stood --------
    @property
    def position(self) -> int:
        """Where the next ``read()`` reads (frames, files) since the start of the source."""
        return 0

    def resume_key(self, position: int) -> str | None:
        """What the source is, as read up to ``position``, for its checkpoint; a source whose key
        changed since is read from the start. None: this source does not resume (a live stream)."""
        return None

    def seek(self, position: int) -> None:
        """After ``open()``: go on at ``position`` (a checkpoint's), without reading what lies before."""
        raise NotImplementedError


class OpenCVSource(Source):
    """cv2.VideoCapture in the service on a video file (and, where there is no V4L2, a USB device index).
    Streams and Linux devices decode in FFmpegSource's process instead; on an URL this is the in-process
    comparison of scripts/stream_decoder_cost.py."""

    def __init__(self, target: str | int, live: bool | None = None, timeout_ms: int = 5000,
                 decode_threads: int = 1) -> None:
        self.target = target
        self.decode_threads = decode_threads
        self.live = live if live is not None else (isinstance(target, int) or _is_url(str(target)))
        self.timeout_ms = timeout_ms
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._index = 0
        self._identity = ""  # the file, or this connection's capture session

    def describe(self) -> str:
        return f"usb:{self.target}" if isinstance(self.target, int) else redact(str(self.target))

    def open(self) -> None:
        self.close()
        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target)
        else:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                      self.timeout_ms]
            if self.decode_threads > 0:
                params += [cv2.CAP_PROP_N_THREADS, self.decode_threads]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.describe()}")
        with self._lock:
            self._cap = cap
        self._index = 0
        self._identity = uuid.uuid4().hex if self.live else "file:" + file_identity(Path(str(self.target)))

    def read(self) -> Frame | None:
        cap = self._cap
        if cap is None:
            raise SourceError("source is closed")
        ok, image = cap.read()
        captured_at, t = _now()
        if not ok or image is None:
            if self._cap is None:
                raise SourceError("source was closed (watchdog)")
            if self.live:
                raise SourceError(f"no frame from {self.describe()}")
            return None
        origin = (live_origin(self._identity, self._index, captured_at) if self.live
                  else f"{self._identity}:{self._index}")
        frame = Frame(image, self._index, captured_at, t, origin=origin)
        if not self.live:
            frame.t_stream = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        self._index += 1
        return frame

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    @property
    def position(self) -> int:
        return self._index

    def resume_key(self, position: int) -> str | None:
        return None if self.live else self._identity  # the file's path, size and modification time

    def seek(self, position: int) -> None:
        """The container's seek (frame-accurate in OpenCV's FFmpeg backend: it decodes from the key
        frame before, without handing those frames out); where it fails, the frames before are
        grabbed (decoded, not converted) and thrown away. Beyond the end, the next read ends."""
        cap = self._cap
        if cap is None or self.live or position <= 0:
            return
        moved = cap.set(cv2.CAP_PROP_POS_FRAMES, position)
        if not (moved and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == position):
            log.warning("%s: cannot seek to frame %d; decoding up to it", self.describe(), position)
            self.open()
            cap = self._cap
            assert cap is not None
            while self._index < position and cap.grab():
                self._index += 1
        self._index = position
    def abort(self, kind: FailureKind, message: str) -> None:
        """Never: releasing a capture while another thread is inside ``read()`` crashes the process.
        Streams and devices decode in FFmpegSource, which can be killed; files end by themselves."""


class FFmpegSource(Source):
    """A network stream (RTSP, HTTP MJPEG, ...) or a capture device decoded by its own FFmpeg process
    (app.ingest.decoder): a decoder that crashes or hangs is killed and restarted, the service stays."""

    live = True

    def __init__(self, target: str | int, decoder: DecoderConfig | None = None, decode_threads: int = 1,
                 io_timeout_s: float = 10.0) -> None:
        self.target = target
        self.decoder_cfg = decoder or DecoderConfig()
        self.decode_threads = decode_threads
        self.io_timeout_s = io_timeout_s
        self._proc: DecoderProcess | None = None
        self._lock = threading.Lock()
        self._index = 0
        self._session = ""  # this connection's capture session

    def describe(self) -> str:
        device = device_path(self.target)
        return f"usb:{device}" if device is not None else redact(str(self.target))

    @property
    def decoder_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def open(self) -> None:
        self.close()
        device = device_path(self.target)
        if device is not None and not Path(device).exists():
            raise SourceError(f"no device {device}", FailureKind.NO_DEVICE)
        try:
            args = ffmpeg_args(self.target, self.decoder_cfg, self.decode_threads, self.io_timeout_s,
                               exe=ffmpeg_exe())
        except DecoderFailed as exc:
            raise SourceError(str(exc), exc.kind) from exc
        proc = DecoderProcess(args)
        with self._lock:
            self._proc = proc
        try:
            proc.start()
        except DecoderFailed as exc:
            raise SourceError(f"cannot open {self.describe()}: {exc}", exc.kind) from exc
        self._index = 0
        self._session = uuid.uuid4().hex

    def read(self) -> Frame | None:
        proc = self._proc
        if proc is None:
            raise SourceError("source is closed")
        try:
            image = proc.read()
        except DecoderFailed as exc:
            kind = exc.kind
            if kind is FailureKind.NOT_VIDEO and self._index > 0:
                # it was video: data that breaks off mid-stream (a server killed mid-packet) is an end
                kind = FailureKind.ENDED
            raise SourceError(f"{self.describe()}: {exc}", kind) from exc
        captured_at, t = _now()
        frame = Frame(image, self._index, captured_at, t,
                      origin=live_origin(self._session, self._index, captured_at))
        self._index += 1
        return frame

    def abort(self, kind: FailureKind, message: str) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None:
            proc.kill(kind, message)

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()


class FolderSource(Source):
    """The images of a folder in name order; unreadable files are skipped with a warning."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._files: list[Path] = []
        self._pos = 0
        self._chain: list[str] = [""]  # resume key of each position up to the one read (resume_key)
        self._chain_lock = threading.Lock()
        self.skipped = 0

    def describe(self) -> str:
        return f"folder:{self.folder}"

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"folder not found: {self.folder}")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._pos = 0
        with self._chain_lock:
            self._chain = [""]

    @property
    def position(self) -> int:
        return self._pos

    def _extend_chain(self, position: int) -> None:
        """Key of position k+1: a digest of the key of k and the identity (path, size, modification
        time) of file k: a file changed, added or removed before ``position`` changes the key."""
        with self._chain_lock:
            chain, files = self._chain, self._files
            while len(chain) <= min(position, len(files)):
                path = files[len(chain) - 1]
                try:
                    identity = file_identity(path)
                except OSError:
                    identity = f"missing:{path}"
                chain.append(hashlib.sha256(f"{chain[-1]}\n{identity}".encode()).hexdigest())

    def resume_key(self, position: int) -> str | None:
        self._extend_chain(position)
        with self._chain_lock:
            return f"folder:{self._chain[position]}" if position < len(self._chain) else None

    def seek(self, position: int) -> None:
        self._extend_chain(position)
        self._pos = min(position, len(self._files))

    def read(self) -> Frame | None:
        while self._pos < len(self._files):
            path = self._files[self._pos]
            index = self._pos
            self._pos += 1
            self._extend_chain(self._pos)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped += 1
                log.warning("skipping unreadable image %s", path)
                continue
            captured_at, t = _now()
            return Frame(image, index, captured_at, t, name=path.name, origin="file:" + file_identity(path))
        return None


class SimulatorSource(Source):
    """The strip simulator as a camera: paced at fps when ``realtime`` (a live line, frames the reader
    misses are gone), else as fast as read (a file). ``seconds`` ends the stream; ``dropout_every``
    pulls the cable every N frames for ``dropout_s`` seconds (reconnect drills)."""

    def __init__(self, cfg: SimulatorConfig) -> None:
        self.cfg = cfg
        self.sim = StripSimulator(cfg.images, cfg.width, cfg.height, cfg.fps, cfg.speed, cfg.seed,
                                  profile=cfg.profile, jitter=cfg.jitter, drift=cfg.drift,
                                  defect_rate=cfg.defect_rate)
        self.live = cfg.realtime and cfg.seconds is None
        self._opened = False
        self._t0: float | None = None
        self._next = 0
        self._since_open = 0
        self._away_until = 0.0
        self._last_frames = int(cfg.seconds * cfg.fps) if cfg.seconds else None
        self._session = ""
        self._drawing = f"sim:{self.sim.images_dir}:{cfg.model_dump_json()}"  # same parameters, same frames

    def describe(self) -> str:
        c = self.cfg
        return f"sim://neu-det?fps={c.fps:g}&width={c.width}&height={c.height}&speed={c.speed:g}"

    def open(self) -> None:
        if time.monotonic() < self._away_until:
            raise SourceError("simulated camera is unplugged")
        self._opened = True
        self._since_open = 0
        self._session = uuid.uuid4().hex
        if self._t0 is None:
            self._t0 = time.monotonic()

    def read(self) -> Frame | None:
        if not self._opened:
            raise SourceError("source is closed")
        cfg = self.cfg
        if cfg.dropout_every and self._since_open >= cfg.dropout_every:
            self._opened = False
            self._away_until = time.monotonic() + cfg.dropout_s
            raise SourceError("simulated cable pull")
        index = self._next
        if cfg.realtime:
            assert self._t0 is not None
            due = self._t0 + index / cfg.fps
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            else:  # the reader is late: a live camera has moved on
                index = max(index, int((now - self._t0) * cfg.fps))
        if self._last_frames is not None and index >= self._last_frames:
            return None
        image, truth = self.sim.frame(index)
        captured_at, t = _now()
        self._next = index + 1
        self._since_open += 1
        # a paced, endless line is live; otherwise the same parameters draw the same frames
        origin = (live_origin(self._session, index, captured_at) if self.live
                  else f"{self._drawing}:{index}")
        return Frame(image, index, captured_at, t, truth=truth, origin=origin, t_stream=index / cfg.fps)

    def close(self) -> None:
        self._opened = False


def _is_url(s: str) -> bool:
    return "://" in s and s.split("://", 1)[0].lower() in LIVE_SCHEMES


def simulator_config_from_url(url: str) -> SimulatorConfig:
    """``sim://neu-det?fps=30&width=640&height=480&speed=120&seed=0&seconds=10&realtime=1``"""
    parts = urlsplit(url)
    params: dict[str, str] = dict(parse_qsl(parts.query, keep_blank_values=True))
    return SimulatorConfig.model_validate(params)


def make_source(cam: CameraConfig, base_dir: Path | None = None, where: str = "") -> Source:
    """The source a camera describes; a bad or missing one raises CamerasConfigError naming the key."""
    key = f"{where}source" if where else "source"
    try:
        if cam.simulator is not None:
            cfg = cam.simulator
            if cfg.images and base_dir is not None and not Path(cfg.images).is_absolute():
                cfg = cfg.model_copy(update={"images": str(base_dir / cfg.images)})
            return SimulatorSource(cfg)
        src = cam.source
        assert src is not None
        # FFmpeg's own socket timeout is only a backstop: the watchdog restarts the decoder first
        io_timeout_s = max(cam.stall_timeout_s, cam.open_timeout()) + 2.0
        if device_path(src) is not None and sys.platform != "linux":  # no V4L2: OpenCV's device backends
            return OpenCVSource(int(src), live=True, decode_threads=cam.decode_threads)
        if device_path(src) is not None or (isinstance(src, str) and _is_url(src)):
            return FFmpegSource(src, cam.decoder, cam.decode_threads, io_timeout_s)
        assert isinstance(src, str)
        if src.startswith("sim://"):
            cfg = simulator_config_from_url(src)
            return SimulatorSource(cfg)
        path = Path(src.removeprefix("folder:").removeprefix("file:"))
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if src.startswith("folder:") or path.is_dir():
            if not path.is_dir():
                raise FileNotFoundError(f"folder not found: {path}")
            return FolderSource(path)
        if not path.is_file():
            raise FileNotFoundError(f"video file not found: {path}")
        return OpenCVSource(str(path), live=False, decode_threads=cam.decode_threads)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CamerasConfigError(f"{key}: bad simulator parameter: {detail}") from exc
    except (FileNotFoundError, ValueError) as exc:
        raise CamerasConfigError(f"{key}: {exc}") from exc
