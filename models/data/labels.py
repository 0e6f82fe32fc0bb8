"""YOLO label files (``class cx cy w h``, normalised): strict reading and whole-dataset checks."""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.errors import ConfigError, UserError
from models.data.formats import DataSpec, label_path_for

# Box edges up to this far outside [0, 1] are clipped silently (annotation tools round); beyond is an error.
EDGE_TOLERANCE = 0.01


class LabelError(ConfigError):
    """A bad label line; the message reads ``FILE:LINE: reason``. ``errors`` holds every such message."""

    def __init__(self, message: str, errors: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


def _parse_line(line: str, nc: int | None) -> tuple[list[float] | None, str | None]:
    """One label line -> ([cls, cx, cy, w, h] or None, error reason or None)."""
    fields = line.split()
    if len(fields) != 5:
        return None, f"expected 5 fields (class cx cy w h), got {len(fields)}"
    values: list[float] = []
    for f in fields:
        try:
            v = float(f)
        except ValueError:
            return None, f"non-numeric value {f!r}"
        if not math.isfinite(v):
            return None, f"non-finite value {f!r}"
        values.append(v)
    cls_text = fields[0]
    cls = values[0]
    if cls != int(cls):
        return None, f"class {cls_text!r} is not an integer"
    if nc is not None and not 0 <= cls < nc:
        return None, f"class {int(cls)} out of range 0..{nc - 1}"
    if cls < 0:
        return None, f"class {int(cls)} is negative"
    cx, cy, w, h = values[1:]
    if w <= 0 or h <= 0:
        return None, f"zero or negative box size (w={fields[3]}, h={fields[4]})"
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    for name, v in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not 0.0 <= v <= 1.0 + EDGE_TOLERANCE:
            return None, f"coordinate {name}={v:g} outside 0-1"
    lo, hi = -EDGE_TOLERANCE, 1.0 + EDGE_TOLERANCE
    for name, v in (("left", x1), ("top", y1), ("right", x2), ("bottom", y2)):
        if not lo <= v <= hi:
            return None, f"box {name} edge {v:g} outside 0-1 (box cx={cx:g} cy={cy:g} w={w:g} h={h:g})"
    # within tolerance: clip the edges to the image and re-derive centre/size
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
    return [cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], None


def parse_labels(label_path: str | os.PathLike[str], nc: int | None) -> tuple[np.ndarray, list[str]]:
    """Read a label file leniently: (valid rows (n,5) float32, ``FILE:LINE: reason`` for each bad line).

    A missing file means an image without boxes. ``nc=None`` skips the class range check.
    """
    p = Path(label_path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return np.zeros((0, 5), np.float32), []
    except (OSError, UnicodeDecodeError) as exc:
        return np.zeros((0, 5), np.float32), [f"{p}:0: cannot read label file: {exc}"]
    rows: list[list[float]] = []
    errors: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        row, err = _parse_line(line, nc)
        if err is not None:
            errors.append(f"{p}:{lineno}: {err}")
        else:
            rows.append(row)  # type: ignore[arg-type]
    arr = np.asarray(rows, np.float32).reshape(-1, 5)
    return arr, errors


def read_labels(label_path: str | os.PathLike[str], nc: int | None) -> np.ndarray:
    """Read a YOLO label file strictly -> (n,5) float32 ``[cls, cx, cy, w, h]``.

    A missing file means no boxes. Raises :class:`LabelError` (``FILE:LINE: reason``) on the first bad line;
    edges up to 0.01 outside the image are clipped.
    """
    arr, errors = parse_labels(label_path, nc)
    if errors:
        more = f" (and {len(errors) - 1} more bad line(s) in this file)" if len(errors) > 1 else ""
        raise LabelError(errors[0] + more, errors)
    return arr


def read_all_labels(image_paths: Iterable[Path], nc: int | None) -> list[np.ndarray]:
    """Labels for every image; raises one :class:`LabelError` listing all bad lines (first 20 shown)."""
    out: list[np.ndarray] = []
    errors: list[str] = []
    for img in image_paths:
        arr, errs = parse_labels(label_path_for(img), nc)
        out.append(arr)
        errors.extend(errs)
    if errors:
        shown = "\n".join(errors[:20])
        tail = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise LabelError(f"{len(errors)} bad label line(s):\n{shown}{tail}" if len(errors) > 1 else errors[0],
                         errors)
    return out


def image_hw(path: Path) -> tuple[int, int]:
    """(height, width) of an image file; raises UserError when it cannot be decoded."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserError(f"{path}: cannot read image")
    return int(img.shape[0]), int(img.shape[1])


def all_boxes_wh(image_paths: Sequence[Path], imgsz: int, nc: int | None = None) -> np.ndarray:
    """(M,2) float32 box widths/heights in pixels at training size (image long side scaled to ``imgsz``).

    Used for anchor fitting. Labels are read strictly (bad lines raise :class:`LabelError`).
    """
    labels = read_all_labels(image_paths, nc)
    whs: list[np.ndarray] = []
    for path, lab in zip(image_paths, labels, strict=True):
        if len(lab) == 0:
            continue
        h, w = image_hw(path)
        r = imgsz / max(h, w)
        whs.append(lab[:, 3:5] * np.array([w * r, h * r], np.float32))
    return np.concatenate(whs, 0).astype(np.float32) if whs else np.zeros((0, 2), np.float32)


@dataclass
class SplitStats:
    images: int = 0
    labelled: int = 0
    boxes: int = 0
    per_class: list[int] = field(default_factory=list)


@dataclass
class DatasetReport:
    """Result of :func:`check_dataset`; ``ok`` is False when any label line is bad."""

    names: list[str]
    splits: dict[str, SplitStats]
    unlabelled: list[Path]  # images whose label file is missing or empty
    label_errors: list[str]  # "FILE:LINE: reason"
    duplicate_images: list[list[Path]]  # groups of images with identical file content
    duplicate_boxes: list[str]  # "FILE:LINE: same box as line N"
    unreadable_images: list[str]  # "FILE: reason"
    split_overlap: dict[str, int] = field(default_factory=dict)  # "train/val" -> shared images

    @property
    def ok(self) -> bool:
        return not self.label_errors and not self.unreadable_images

    def format(self) -> str:
        lines: list[str] = []
        width = max(len(n) for n in self.names)
        for split, st in self.splits.items():
            lines.append(f"{split}: {st.images} images, {st.labelled} labelled, {st.boxes} boxes")
            for name, count in zip(self.names, st.per_class, strict=True):
                lines.append(f"  {name:<{width}} {count}")
        for pair, n in self.split_overlap.items():
            if n:
                lines.append(f"warning: {n} image(s) appear in both {pair}")
        if self.unlabelled:
            lines.append(f"images without labels: {len(self.unlabelled)}")
            lines.extend(f"  {p}" for p in self.unlabelled[:20])
            if len(self.unlabelled) > 20:
                lines.append(f"  ... and {len(self.unlabelled) - 20} more")
        if self.duplicate_images:
            lines.append(f"duplicate images (same content): {len(self.duplicate_images)} group(s)")
            lines.extend("  " + " = ".join(str(p) for p in g) for g in self.duplicate_images)
        if self.duplicate_boxes:
            lines.append(f"duplicate boxes: {len(self.duplicate_boxes)}")
            lines.extend(f"  {m}" for m in self.duplicate_boxes)
        if self.unreadable_images:
            lines.append(f"unreadable images: {len(self.unreadable_images)}")
            lines.extend(f"  {m}" for m in self.unreadable_images)
        if self.label_errors:
            lines.append(f"label errors: {len(self.label_errors)}")
            lines.extend(f"  {m}" for m in self.label_errors)
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def _file_hash(path: Path) -> str | None:
    h = hashlib.sha1()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _duplicate_boxes(label_path: Path) -> list[str]:
    """``FILE:LINE: same box as line N`` for repeated (class, box) lines in one file (exact text match
    after number normalisation)."""
    try:
        text = label_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    seen: dict[tuple[float, ...], int] = {}
    out: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if len(fields) != 5:
            continue
        try:
            key = tuple(round(float(f), 6) for f in fields)
        except ValueError:
            continue
        if key in seen:
            out.append(f"{label_path}:{lineno}: same box as line {seen[key]}")
        else:
            seen[key] = lineno
    return out


def check_dataset(spec: DataSpec, check_images: bool = False) -> DatasetReport:
    """Check every split: counts per class, unlabelled images, bad label lines (collected, not raised),
    duplicate images by content hash, duplicate boxes within a file. ``check_images`` also decodes
    every image (slower) and reports unreadable ones."""
    splits: dict[str, list[Path]] = {"train": spec.train, "val": spec.val}
    if spec.test is not None:
        splits["test"] = spec.test
    stats: dict[str, SplitStats] = {}
    unlabelled: list[Path] = []
    errors: list[str] = []
    dup_boxes: list[str] = []
    unreadable: list[str] = []
    seen_labels: set[Path] = set()
    all_images: dict[Path, None] = {}
    for split, paths in splits.items():
        st = SplitStats(images=len(paths), per_class=[0] * spec.nc)
        for img in paths:
            all_images[img] = None
            lp = label_path_for(img)
            arr, errs = parse_labels(lp, spec.nc)
            new_file = lp not in seen_labels
            seen_labels.add(lp)
            if new_file:
                errors.extend(errs)
                dup_boxes.extend(_duplicate_boxes(lp))
            if len(arr) == 0 and not errs:
                unlabelled.append(img)
            if len(arr):
                st.labelled += 1
            st.boxes += len(arr)
            for c, n in Counter(arr[:, 0].astype(int).tolist()).items():
                st.per_class[c] += n
            if check_images and new_file:
                try:
                    image_hw(img)
                except UserError as exc:
                    unreadable.append(str(exc))
        stats[split] = st
    overlap: dict[str, int] = {}
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlap[f"{a}/{b}"] = len(set(splits[a]) & set(splits[b]))
    by_hash: dict[str, list[Path]] = {}
    for img in all_images:
        digest = _file_hash(img)
        if digest is None:
            unreadable.append(f"{img}: cannot read file")
            continue
        by_hash.setdefault(digest, []).append(img)
    dups = [sorted(g) for g in by_hash.values() if len(g) > 1]
    return DatasetReport(
        names=list(spec.names),
        splits=stats,
        unlabelled=unlabelled,
        label_errors=errors,
        duplicate_images=sorted(dups),
        duplicate_boxes=dup_boxes,
        unreadable_images=unreadable,
        split_overlap=overlap,
    )
