"""Operator-reviewed defects as a YOLO dataset that ``defect-inspect train`` reads (the command is
``defect-inspect dataset export-reviewed``, app/commands/export_reviewed.py).

What goes in: inspections with a stored image whose defects have been reviewed. Confirmed and reclassified
boxes are kept with their reviewed class (a box an operator corrected with its new corners, a defect an
operator drew where the model missed it like any confirmed box), rejected boxes are dropped (an image whose
boxes were all rejected becomes a background image, a useful false-positive example). An image that still
has pending defects is left out entirely unless ``--include-pending`` (then its pending boxes keep the
detected class): keeping the image without those boxes would teach the model that an unreviewed defect is
background.

A frame of a camera with tracking holds one defect row per physical defect whose best frame it is; other
defects it shows are stored on their own best frames. Such a frame (more boxes counted on it than model
defects stored on it) is left out for the same reason, unless an operator marked it fully reviewed
(every defect in it drawn or decided).

Layout: ``OUT/images/{train,val}/<frame_uid>.<ext>``, ``OUT/labels/{train,val}/<frame_uid>.txt``,
``OUT/train.txt``, ``OUT/val.txt`` and ``OUT/data.yaml`` (``names`` = the model's class names). The split
is a stable hash of the frame uid, so re-exporting puts an image in the same split.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from app.db.models import Defect, Inspection
from app.db.queries import Filters, inspection_conditions
from app.errors import UserError

log = logging.getLogger(__name__)

REVIEWED = ("confirmed", "reclassified", "rejected")


@dataclass
class ExportReport:
    out: Path
    images: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    boxes: int = 0
    background: int = 0
    skipped_pending: int = 0
    skipped_partial: int = 0  # frames of tracked cameras showing defects stored on other frames
    missing_images: list[str] = field(default_factory=list)

    def format(self) -> str:
        total = sum(self.images.values())
        lines = [f"wrote {self.out / 'data.yaml'}: {total} images (train {self.images['train']}, "
                 f"val {self.images['val']}), {self.boxes} boxes, {self.background} background images"]
        if self.skipped_pending:
            lines.append(f"left out {self.skipped_pending} images with pending defects (--include-pending)")
        if self.skipped_partial:
            lines.append(f"left out {self.skipped_partial} frames of tracked cameras that show defects "
                         "stored on other frames (mark such a frame fully reviewed to include it)")
        if self.missing_images:
            lines.append(f"skipped {len(self.missing_images)} inspections whose stored image is missing, "
                         f"e.g. {self.missing_images[0]}")
        return "\n".join(lines)


def split_of(frame_uid: str, val_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(frame_uid.encode()).digest()[:4], "big") / 2**32
    return "val" if h < val_fraction else "train"


def yolo_line(d: Defect, class_id: int, width: int, height: int) -> str | None:
    x1, x2 = sorted((max(0.0, min(width, d.x1)), max(0.0, min(width, d.x2))))
    y1, y2 = sorted((max(0.0, min(height, d.y1)), max(0.0, min(height, d.y2))))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    return f"{class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"


def _labels(inspection: Inspection, names: Sequence[str], include_pending: bool) -> list[str] | None:
    """YOLO label lines of one inspection, or None if it must be left out (pending defects)."""
    out: list[str] = []
    for d in inspection.defects:
        status = d.review_status or "pending"
        if status == "rejected":
            continue
        if status == "pending":
            if not include_pending:
                return None
            name = d.class_name
        else:
            name = d.reviewed_class_name or d.class_name
        if name not in names:
            raise UserError(f"defect {d.id} (inspection {inspection.id}) has class {name!r}, which is not a "
                           f"model class ({', '.join(names)}); pass the model it was reviewed with (--model)")
        line = yolo_line(d, list(names).index(name), inspection.width, inspection.height)
        if line is not None:
            out.append(line)
    return out


def shows_defects_stored_elsewhere(inspection: Inspection) -> bool:
    """A tracked camera's frame whose boxes are not all its own defect rows (some are other tracks',
    stored on their best frames), and which no operator completed."""
    own = sum(1 for d in inspection.defects if d.source == "model")
    return inspection.fully_reviewed_at is None and inspection.defect_count > own


def export_reviewed(session: Session, data_dir: Path, out: Path, names: Sequence[str], *,
                    start: datetime | None = None, end: datetime | None = None, line: str | None = None,
                    include_pending: bool = False, val_fraction: float = 0.2) -> ExportReport:
    from app.images import resolve

    if not names:
        raise UserError("no class names: the model carries none (pass --names)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: output folder exists and is not empty")
    statuses = list(REVIEWED) + (["pending"] if include_pending else [])
    conds = inspection_conditions(Filters(start=start, end=end, line=line))
    stmt = (
        select(Inspection)
        .where(*conds, Inspection.image_path.is_not(None),
               exists().where(Defect.inspection_id == Inspection.id, Defect.review_status.in_(statuses)))
        .options(selectinload(Inspection.defects))
        .order_by(Inspection.captured_at, Inspection.id)
    )
    report = ExportReport(out=out)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for inspection in session.scalars(stmt):
        labels = _labels(inspection, names, include_pending)
        if labels is None:
            report.skipped_pending += 1
            continue
        if shows_defects_stored_elsewhere(inspection):
            report.skipped_partial += 1
            continue
        try:
            src = resolve(data_dir, inspection.image_path or "")
        except ValueError:
            src = None
        if src is None or not src.is_file():
            report.missing_images.append(str(inspection.image_path))
            continue
        split = split_of(inspection.frame_uid, val_fraction)
        rel_image = f"images/{split}/{inspection.frame_uid}{src.suffix.lower()}"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / rel_image)
        (out / "labels" / split / f"{inspection.frame_uid}.txt").write_text(
            "".join(f"{x}\n" for x in labels), encoding="utf-8")
        lists[split].append(rel_image)
        report.images[split] += 1
        report.boxes += len(labels)
        report.background += int(not labels)
    total = report.images["train"] + report.images["val"]
    if total == 0:
        raise UserError("nothing to export: no reviewed inspections with stored images match "
                       f"({report.skipped_pending} left out for pending defects, "
                       f"{len(report.missing_images)} with missing images)")
    # Training needs both splits: with a single image, or everything hashed to one side, reuse one.
    for a, b in (("train", "val"), ("val", "train")):
        if not lists[a]:
            lists[a] = [lists[b][0]]
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (out / f"{split}.txt").write_text("".join(f"{p}\n" for p in lists[split]), encoding="utf-8")
    doc = {"path": ".", "train": "train.txt", "val": "val.txt", "nc": len(names), "names": list(names)}
    (out / "data.yaml").write_text(
        "# Exported by `defect-inspect dataset export-reviewed` from operator-reviewed defects.\n"
        + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return report
