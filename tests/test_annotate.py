"""The annotated image an operator or MES sees: labels always whole and inside the frame (a box as tall
as the frame, a box at the right edge), the class colour, and the rejected-box style, checked on the
drawn pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.annotate import MIN_FONT_SCALE, PALETTE, REJECTED, color_for, draw_defects, place_label
from app.db.models import Defect

W, H = 320, 200


def defect(box: tuple[float, float, float, float], class_id: int = 1, status: str = "pending",
           reviewed_class_id: int | None = None) -> Defect:
    names = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    return Defect(class_id=class_id, class_name=names[class_id], confidence=0.87, x1=box[0], y1=box[1],
                  x2=box[2], y2=box[3], review_status=status, reviewed_class_id=reviewed_class_id,
                  reviewed_class_name=None if reviewed_class_id is None else names[reviewed_class_id])


def drawn_colour(pixel: np.ndarray) -> tuple[int, int, int]:
    """The drawing colour a pixel shows: box edges are anti-aliased, so the nearest of the palette."""
    colours = [*PALETTE, REJECTED]
    return min(colours, key=lambda c: int(np.abs(pixel.astype(int) - np.array(c)).sum()))


def text_pixels(pixels: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Pixels of a label that are not its background: the (anti-aliased) letters, as brightness."""
    brightness = pixels.astype(int).sum(axis=1)
    return brightness[np.abs(brightness - sum(background)) > 60]


def grey_frame() -> np.ndarray:
    return np.full((H, W, 3), 90, np.uint8)


@given(x1=st.integers(0, W - 1), y1=st.integers(0, H - 1), bw=st.integers(1, W), bh=st.integers(1, H),
       tw=st.integers(1, 2 * W), th=st.integers(1, 40), base=st.integers(0, 10))
def test_a_label_is_always_inside_the_frame(x1: int, y1: int, bw: int, bh: int, tw: int, th: int,
                                            base: int) -> None:
    x2, y2 = min(W - 1, x1 + bw), min(H - 1, y1 + bh)
    at = place_label((x1, y1, x2, y2), tw, th, base, W, H)
    assert 0 <= at.x1 <= at.x2 <= W - 1 and 0 <= at.y1 <= at.y2 <= H - 1
    assert at.x1 <= at.text_x < W and at.y1 <= at.text_y <= at.y2


def test_a_label_sits_above_a_box_with_room_above() -> None:
    at = place_label((40, 100, 90, 150), 60, 12, 4, W, H)
    assert at.y2 <= 100 and at.x1 == 40


def test_a_label_goes_below_a_box_at_the_top_edge() -> None:
    at = place_label((40, 0, 90, 50), 60, 12, 4, W, H)
    assert at.y1 > 50


def test_a_box_as_tall_as_the_frame_gets_its_label_inside_its_top() -> None:
    at = place_label((40, 0, 90, H - 1), 60, 12, 4, W, H)
    assert at.y1 == 0 and at.y2 < H - 1


def test_a_label_at_the_right_edge_is_shifted_left_whole() -> None:
    at = place_label((W - 20, 100, W - 1, 150), 80, 12, 4, W, H)
    assert at.x2 == W - 1 and at.x1 == W - 1 - 84 and at.text_x + 80 <= W


def drawn_label_pixels(image: np.ndarray, d: Defect, label: str) -> np.ndarray:
    """The pixels of the label region the renderer chose for ``d`` (same placement function)."""
    import cv2

    font_scale = max(MIN_FONT_SCALE, 0.45 * max(0.4, min(W, H) / 500.0))
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    at = place_label((int(d.x1), int(d.y1), int(d.x2), int(d.y2)), tw, th, base, W, H)
    return image[at.y1:at.y2 + 1, at.x1:at.x2 + 1].reshape(-1, 3)


@pytest.mark.parametrize("box", [(40.0, 60.0, 120.0, 150.0), (40.0, 0.0, 120.0, H - 1.0),
                                 (W - 30.0, 80.0, W - 1.0, 140.0)])
def test_the_box_and_its_label_are_drawn_in_the_class_colour_with_white_text(box) -> None:
    d = defect(box, class_id=2)
    out = draw_defects(grey_frame(), [d])
    x1, y1 = int(box[0]), int(box[1])
    assert drawn_colour(out[(y1 + int(box[3])) // 2, x1]) == color_for(2)  # the box's left edge
    pixels = drawn_label_pixels(out, d, "patches 0.87")
    assert color_for(2) in {tuple(p) for p in pixels}  # the filled background
    letters = text_pixels(pixels, color_for(2))
    assert len(letters) > 20 and letters.mean() > sum(color_for(2))  # light letters, inside the frame


def test_a_rejected_box_is_grey_with_dark_text() -> None:
    d = defect((40.0, 60.0, 120.0, 150.0), class_id=2, status="rejected")
    out = draw_defects(grey_frame(), [d])
    assert drawn_colour(out[100, 40]) == REJECTED
    pixels = drawn_label_pixels(out, d, "patches 0.87 x")
    assert REJECTED in {tuple(p) for p in pixels}
    letters = text_pixels(pixels, REJECTED)
    assert len(letters) > 20 and letters.mean() < sum(REJECTED)  # dark letters


def test_a_reclassified_box_takes_the_colour_of_its_reviewed_class() -> None:
    d = defect((40.0, 60.0, 120.0, 150.0), class_id=2, status="reclassified", reviewed_class_id=5)
    out = draw_defects(grey_frame(), [d])
    assert drawn_colour(out[100, 40]) == color_for(5) != color_for(2)


def test_drawing_leaves_the_stored_image_untouched() -> None:
    frame = grey_frame()
    draw_defects(frame, [defect((40.0, 60.0, 120.0, 150.0))])
    assert (frame == 90).all()
