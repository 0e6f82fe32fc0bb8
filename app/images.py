"""Image bytes in and out: sniff and size-check uploads before decoding, decode to BGR, encode frames
and defect crops as JPEG, and the file primitives of the image store under the data dir (which image
of an inspection is stored, and where, is ``app.inspection.store``'s)."""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from app.errors import TooLarge, UserError

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


class ImageError(UserError):
    """A frame we refuse (empty, not a JPEG or PNG, corrupt); ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)


class ImageTooLarge(ImageError, TooLarge):
    """A frame beyond the configured pixel limit."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # jpeg | png
    width: int
    height: int


def sniff_format(data: bytes) -> str | None:
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first SOFn marker, without decoding."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def probe(data: bytes) -> ImageInfo:
    """Format and size from the header; rejects empty, non-image and truncated data."""
    if not data:
        raise ImageError("empty_body", "the request carries no image data")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("not_an_image", "the data is not a JPEG or PNG image")
    if fmt == "jpeg":
        size = _jpeg_size(data)
        if size is None:
            raise ImageError("corrupt_image", "the JPEG has no readable frame header (corrupt or truncated)")
        if not data.rstrip(b"\x00\r\n ").endswith(JPEG_EOI):
            raise ImageError("corrupt_image", "the JPEG is truncated (no end-of-image marker FFD9)")
    else:
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise ImageError("corrupt_image", "the PNG has no IHDR header (corrupt or truncated)")
        size = struct.unpack(">II", data[16:24])
        if not data.rstrip(b"\x00").endswith(PNG_IEND):
            raise ImageError("corrupt_image", "the PNG is truncated (no IEND chunk)")
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError("corrupt_image", f"the image header gives an empty size {w}x{h}")
    return ImageInfo(fmt, int(w), int(h))


# OpenCV decodes a JPEG at 1/2, 1/4 or 1/8 of its size inside the DCT (cheap in time and memory, and an
# average of the pixels it replaces); a PNG it decodes whole and then samples down bilinearly, which is an
# exact 2x2 average at 1/2 only, and aliases below that. Each format keeps the factors that stay exact.
REDUCED_READ_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                      8: cv2.IMREAD_REDUCED_COLOR_8}
REDUCTIONS = {"jpeg": (8, 4, 2), "png": (2,)}


def reduction(info: ImageInfo, fit: tuple[int, int] | None) -> int:
    """The largest factor an image can be decoded smaller by and still fill ``fit`` = (h, w), the box it
    is shrunk into afterwards keeping its aspect (the model input); 1 when it cannot be reduced."""
    if fit is None:
        return 1
    ratio = min(fit[0] / info.height, fit[1] / info.width)
    return next((f for f in REDUCTIONS[info.format] if f * ratio <= 1), 1)


def decode(data: bytes, max_pixels: int, fit: tuple[int, int] | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Checked decode to a BGR uint8 frame. Raises ``ImageError`` for anything wrong.

    ``fit``: the (h, w) box the frame will be shrunk into (aspect kept); a large image is then decoded at
    1/2, 1/4 or 1/8 of its size (``reduction``), which needs a fraction of the memory and time. The
    frame may so be smaller than the image; ``ImageInfo`` always gives the image's own size, and boxes
    found on the frame map back by ``info.width / frame width`` (and the same for heights)."""
    info = probe(data)
    if info.width * info.height > max_pixels:
        raise ImageTooLarge("too_many_pixels",
                            f"the image is {info.width}x{info.height} = {info.width * info.height} pixels, "
                            f"more than the limit of {max_pixels}")
    factor = reduction(info, fit)
    flag = REDUCED_READ_FLAGS[factor] if factor > 1 else cv2.IMREAD_COLOR
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if frame is None or frame.size == 0:
        raise ImageError("corrupt_image", f"the {info.format.upper()} data cannot be decoded")
    # a reduced side is the image's divided by the factor, rounded down (PNG) or up (JPEG)
    if (frame.shape[1] not in (info.width // factor, -(-info.width // factor))
            or frame.shape[0] not in (info.height // factor, -(-info.height // factor))):
        raise ImageError("corrupt_image", "the decoded size disagrees with the image header")
    return frame, info


# -- storage ------------------------------------------------------------------------------------
def relative_path(frame_uid: str, when: datetime, ext: str) -> str:
    """``images/2026/11/27/<frame_uid>.jpg`` (POSIX separators, stored in inspections.image_path)."""
    if not frame_uid or not all(c.isalnum() or c in "-_" for c in frame_uid):
        raise ValueError(f"frame_uid {frame_uid!r} is not a safe file name")
    return f"images/{when:%Y/%m/%d}/{frame_uid}{ext}"


def resolve(data_dir: Path, rel: str) -> Path:
    """The absolute path of a stored image; refuses anything outside ``data_dir``."""
    root = data_dir.resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        raise ValueError(f"image path {rel!r} leaves the data directory")
    return path


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return buf.tobytes()


def crop_jpegs(frame: np.ndarray, xyxy: np.ndarray, quality: int = 90) -> list[bytes]:
    """One JPEG per box (x1, y1, x2, y2 in frame pixels, clipped to the frame; empty boxes skipped)."""
    h, w = frame.shape[:2]
    crops: list[bytes] = []
    for box in np.asarray(xyxy):
        x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
        x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
        if x2 > x1 and y2 > y1:
            crops.append(encode_jpeg(frame[y1:y2, x1:x2], quality))
    return crops


DISK_BLOCK = 4096  # the allocation unit the image store is measured in


def disk_bytes(size: int) -> int:
    """The room a file of ``size`` bytes takes on disk: whole 4 KiB blocks (what ``du`` counts; a
    crop of 3 kB takes 4 KiB)."""
    return -(-size // DISK_BLOCK) * DISK_BLOCK


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
