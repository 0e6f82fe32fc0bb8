"""Draw an inspection's boxes on its stored image (OpenCV): one colour per class, a label with the class
and confidence, rejected boxes grey, reviewed classes shown as reviewed."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from app.db.models import Defect

# BGR, readable on grey steel images.
PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
]
REJECTED = (150, 150, 150)


def color_for(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


def draw_defects(image: np.ndarray, defects: Iterable[Defect]) -> np.ndarray:
    """A copy of ``image`` (BGR) with the defects drawn."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 500.0)
    thickness = max(1, round(scale * 2))
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
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + base + 4)
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + 2), color, -1)
        cv2.putText(out, label, (x1 + 2, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                    (255, 255, 255) if not rejected else (30, 30, 30), 1, cv2.LINE_AA)
    return out
