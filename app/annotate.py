"""Draw an inspection's boxes on its stored image (OpenCV): one colour per class, a label with the class
and confidence, rejected boxes grey, reviewed classes shown as reviewed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from app.db.models import Defect

# BGR, readable on grey steel images.
PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
]
REJECTED = (150, 150, 150)
LABEL_TEXT = (255, 255, 255)
REJECTED_TEXT = (30, 30, 30)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_FONT_SCALE = 0.4  # ~9 px letters: legible on NEU-DET's 200x200 frames


def color_for(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


@dataclass(frozen=True)
class LabelPlacement:
    """Where a box's label goes: its filled background (x1, y1)-(x2, y2) and the text origin, all
    inside the frame."""

    x1: int
    y1: int
    x2: int
    y2: int
    text_x: int
    text_y: int


def place_label(box: tuple[int, int, int, int], text_w: int, text_h: int, baseline: int,
                frame_w: int, frame_h: int) -> LabelPlacement:
    """Above the box where it fits, else below it, else inside its top edge (a box as tall as the
    frame); shifted left where the box sits at the right edge, so the whole label is always visible."""
    bx1, by1, _, by2 = box
    height = text_h + baseline + 4
    width = min(text_w + 4, frame_w)
    if by1 - height >= 0:
        top = by1 - height
    elif by2 + height <= frame_h - 1:
        top = by2 + 1
    else:
        top = max(0, min(by1, frame_h - height))
    left = max(0, min(bx1, frame_w - 1 - width))
    bottom = min(frame_h - 1, top + height)
    return LabelPlacement(left, top, min(frame_w - 1, left + width), bottom, left + 2, bottom - baseline - 1)


def draw_defects(image: np.ndarray, defects: Iterable[Defect]) -> np.ndarray:
    """A copy of ``image`` (BGR) with the defects drawn."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 500.0)
    thickness = max(1, round(scale * 2))
    font_scale = max(MIN_FONT_SCALE, 0.45 * scale)
    for d in defects:
        x1, y1 = int(round(max(0, d.x1))), int(round(max(0, d.y1)))
        x2, y2 = int(round(min(w - 1, d.x2))), int(round(min(h - 1, d.y2)))
        rejected = d.review_status == "rejected"
        reviewed = d.review_status in ("confirmed", "reclassified")
        class_id = d.reviewed_class_id if reviewed and d.reviewed_class_id is not None else d.class_id
        name = d.reviewed_class_name if reviewed and d.reviewed_class_name else d.class_name
        color = REJECTED if rejected else color_for(class_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f"{name} {d.confidence:.2f}" + (" x" if rejected else " ok" if reviewed else "")
        (tw, th), base = cv2.getTextSize(label, FONT, font_scale, 1)
        at = place_label((x1, y1, x2, y2), tw, th, base, w, h)
        cv2.rectangle(out, (at.x1, at.y1), (at.x2, at.y2), color, -1)
        cv2.putText(out, label, (at.text_x, at.text_y), FONT, font_scale,
                    REJECTED_TEXT if rejected else LABEL_TEXT, 1, cv2.LINE_AA)
    return out
