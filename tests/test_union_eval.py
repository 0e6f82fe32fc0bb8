"""scripts/union_eval.py maps the boxes of flipped and resized copies back onto the original input:
a wrong axis or factor would silently score a test-time augmentation lower (or higher) than it is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from app.inference.postprocess import postprocess
from app.inference.preprocess import make_batch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "union_eval.py"


def load_script():
    spec = importlib.util.spec_from_file_location("union_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BrightSpotFinder:
    """A detector of one class that boxes the bright pixels of each input (one raw YOLOv5 row)."""

    names = ("spot",)

    def __init__(self, size: tuple[int, int]):
        self.size = size

    def preprocess(self, images):
        return make_batch(images, self.size)

    def run(self, batch: np.ndarray) -> np.ndarray:
        rows = []
        for image in batch:
            ys, xs = np.nonzero(image[0] > 0.9)
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            rows.append([[(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 1.0, 1.0]])
        return np.asarray(rows, dtype=np.float32)

    def postprocess(self, raw, params, conf_threshold=0.25, iou_threshold=0.45, max_det=300, *,
                    multi_label=False):
        return postprocess(raw, params, "yolov5", self.names, conf_threshold, iou_threshold, max_det,
                           multi_label=multi_label)


def test_every_copy_boxes_the_spot_where_it_is_in_the_original():
    union_eval = load_script()
    image = np.zeros((200, 300, 3), np.uint8)
    image[40:80, 30:90] = 255  # off-centre, so a flip that is not undone lands elsewhere
    base = BrightSpotFinder((224, 320))
    union = union_eval.UnionDetector(base, flips=("lr", "ud", "lrud"), scales=(1.5, 0.75))
    batch, params = union.preprocess([image])
    raw = union.run(batch)
    assert raw.shape == (1, 6, 6)  # the image, three flips, two sizes
    boxes = union.postprocess(raw, params, 0.5, 1.01, 10)[0]  # an NMS that suppresses nothing
    assert len(boxes) == 6
    np.testing.assert_allclose(boxes.xyxy, np.tile([30, 40, 90, 80], (6, 1)), atol=2.5)


def test_the_union_of_copies_is_one_box_after_the_services_nms():
    union_eval = load_script()
    image = np.zeros((200, 200, 3), np.uint8)
    image[120:150, 20:60] = 255
    union = union_eval.UnionDetector(BrightSpotFinder((256, 256)), flips=("lr",), scales=(1.25,))
    batch, params = union.preprocess([image])
    boxes = union.postprocess(union.run(batch), params, 0.5, 0.45, 10)[0]
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes.xyxy[0], [20, 120, 60, 150], atol=1.5)
