"""Large uploads are decoded reduced when the model input is much smaller (app/images.py): the answer
and the stored row still speak of the image itself (its size, boxes in its pixels, its own bytes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app import images
from app.inference import Engine


def encoded(ext: str, w: int, h: int, value: int = 230) -> bytes:
    frame = np.full((h, w, 3), value, np.uint8)
    frame[h // 3:h // 2, w // 4:w // 2] = 40  # some structure, so a wrong mapping shows
    ok, buf = cv2.imencode(ext, frame)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(("fmt", "size", "fit", "factor"), [
    ("jpeg", (4000, 3000), (64, 64), 8),
    ("jpeg", (4000, 3000), (640, 640), 4),
    ("jpeg", (4000, 3000), (1600, 1600), 2),
    ("jpeg", (4000, 3000), (2048, 2048), 1),  # 1/2 would be smaller than the model sees it
    ("png", (4000, 3000), (64, 64), 2),  # PNG: only the exact 2x2 average
    ("png", (300, 100), (64, 64), 2),
    ("png", (100, 60), (64, 64), 1),
    ("jpeg", (4000, 3000), None, 1),
])
def test_the_reduction_keeps_the_frame_at_least_as_large_as_the_model_sees_it(fmt, size, fit, factor) -> None:
    info = images.ImageInfo(fmt, *size)
    assert images.reduction(info, fit) == factor
    if fit is not None and factor > 1:
        scale = min(fit[0] / size[1], fit[1] / size[0])
        assert size[0] / factor >= size[0] * scale and size[1] / factor >= size[1] * scale


@pytest.mark.parametrize(("ext", "w", "h", "shape"), [
    (".jpg", 4000, 3000, (375, 500, 3)),
    (".jpg", 4001, 3001, (376, 501, 3)),  # JPEG rounds a reduced side up
    (".png", 4001, 3001, (1500, 2000, 3)),  # PNG rounds it down
    (".png", 120, 90, (90, 120, 3)),
])
def test_decode_with_fit_gives_a_reduced_frame_and_the_image_size(ext, w, h, shape) -> None:
    frame, info = images.decode(encoded(ext, w, h), 10**8, fit=(64, 64))
    assert frame.shape == shape
    assert (info.width, info.height) == (w, h)


def test_decode_without_fit_is_the_full_frame() -> None:
    frame, info = images.decode(encoded(".jpg", 1000, 600), 10**8)
    assert frame.shape == (600, 1000, 3) and (info.width, info.height) == (1000, 600)


def test_the_pixel_limit_is_checked_before_any_decode() -> None:
    with pytest.raises(images.ImageTooLarge):
        images.decode(encoded(".png", 4000, 3000), 4000 * 3000 - 1, fit=(64, 64))


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_an_upload_decoded_reduced_answers_in_image_pixels_and_stores_the_original(
        client, tiny_model_path, ext: str) -> None:
    data = encoded(ext, 4000, 3000)
    resp = client.post("/api/v1/inspections", files={"file": (f"f{ext}", data, "application/octet-stream")})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["width"], body["height"]) == (4000, 3000)
    # what the detector finds on the whole frame, decoded in full
    full, _ = images.decode(data, 10**8)
    [expected] = Engine(tiny_model_path, ["cpu"], intra_op_threads=1).detect([full])
    assert body["verdict"] == "NG" and len(body["defects"]) == len(expected) == 1
    assert body["defects"][0]["class_name"] == expected.class_name(int(expected.class_id[0]))
    np.testing.assert_allclose(body["defects"][0]["box"], expected.xyxy[0], atol=0.5)
    stored = client.get(f"/api/v1/inspections/{body['id']}/image")
    assert stored.status_code == 200 and stored.content == data
