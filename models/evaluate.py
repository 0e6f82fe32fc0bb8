"""COCO-style evaluation (pycocotools) of a torch checkpoint or an ONNX file on a data.yaml split.

ONNX files go through ``app.inference.Engine``, the code the service runs, so the figure a user reads is
the figure the service delivers. Checkpoints go through ``TorchDetector``, which shares the engine's
letterbox and decoding/NMS steps."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from app.detections import Detections
from app.inference.postprocess import box_iou, postprocess
from app.inference.preprocess import Letterbox, make_batch
from models.data.formats import DataSpec
from models.data.labels import read_labels

EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.6, 100  # COCO scores the top 100 per image
SERVE_CONF, SERVE_IOU = 0.25, 0.45


class Detector(Protocol):
    names: Sequence[str]

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]: ...
    def run(self, batch: np.ndarray) -> np.ndarray: ...
    def postprocess(
        self,
        raw: np.ndarray,
        params: Sequence[Letterbox],
        conf_threshold: float = ...,
        iou_threshold: float = ...,
        max_det: int = ...,
        *,
        multi_label: bool = ...,
    ) -> list[Detections]: ...


class TorchDetector:
    """A ``DetectionModel`` behind the engine's interface (same letterbox, same decode and NMS)."""

    def __init__(
        self,
        model: torch.nn.Module,
        names: Sequence[str],
        imgsz: int,
        device: str | torch.device = "cpu",
        half: bool = False,
    ):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.half = half and self.device.type == "cuda"
        self.names = tuple(names)
        self.imgsz = (imgsz, imgsz)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        return make_batch(images, self.imgsz)

    @torch.no_grad()
    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        with torch.autocast(self.device.type, enabled=self.half):
            out = self.model(x)
        return out.float().cpu().numpy()

    def postprocess(
        self,
        raw: np.ndarray,
        params: Sequence[Letterbox],
        conf_threshold: float = SERVE_CONF,
        iou_threshold: float = SERVE_IOU,
        max_det: int = 300,
        *,
        multi_label: bool = False,
    ) -> list[Detections]:
        return postprocess(
            raw, params, "yolov5", self.names, conf_threshold, iou_threshold, max_det, multi_label=multi_label
        )


def load_detector(
    path: str | Path, device: str = "cpu", providers: Sequence[str] | None = None, threads: int = 0
) -> tuple[Detector, dict[str, Any]]:
    """An ONNX file (through the service's Engine) or a training checkpoint (.pt)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from app.inference import Engine

        engine = Engine(path, providers=providers, intra_op_threads=threads)
        return engine, {
            "kind": "onnx",
            "imgsz": list(engine.imgsz),
            "version": engine.version,
            "provider": engine.provider,
        }
    from models.checkpoint import load_model

    model, ckpt = load_model(path, device=device)
    return TorchDetector(model, ckpt["names"], ckpt["imgsz"], device), {
        "kind": "torch",
        "imgsz": [ckpt["imgsz"]] * 2,
        "version": ckpt.get("version", path.stem),
    }


def greedy_match(
    xyxy: np.ndarray, confidence: np.ndarray, gt_xyxy: np.ndarray, iou: float = 0.5
) -> np.ndarray:
    """Greedy matching by confidence: each box, best first, takes the unmatched ground-truth box it
    overlaps most (IoU >= ``iou``). Returns, per box in its given order, that ground-truth index or -1.
    Best-first means the boxes above any confidence are matched exactly as they would be alone."""
    taken = np.full(len(xyxy), -1, dtype=np.int64)
    matched = np.zeros(len(gt_xyxy), dtype=bool)
    if not len(xyxy) or not len(gt_xyxy):
        return taken
    ious = box_iou(xyxy, gt_xyxy)
    for i in np.argsort(-confidence):
        best, best_j = iou, -1
        for j in range(len(gt_xyxy)):
            if not matched[j] and ious[i, j] >= best:
                best, best_j = ious[i, j], j
        if best_j >= 0:
            matched[best_j] = True
            taken[i] = best_j
    return taken


def match_at_threshold(
    dets: Detections, gt_xyxy: np.ndarray, gt_cls: np.ndarray, iou: float = 0.5
) -> tuple[int, int, list[tuple[int, int]]]:
    """Greedy matching by confidence (``greedy_match``, any class). Returns (true positives, false
    positives, confusion pairs (true class or -1 for background, predicted class or -1 for missed))."""
    pairs: list[tuple[int, int]] = []
    taken = greedy_match(dets.xyxy, dets.confidence, gt_xyxy, iou)
    tp = fp = 0
    for i in np.argsort(-dets.confidence):
        j = taken[i]
        if j >= 0:
            pairs.append((int(gt_cls[j]), int(dets.class_id[i])))
            if gt_cls[j] == dets.class_id[i]:
                tp += 1
            else:
                fp += 1
        else:
            fp += 1
            pairs.append((-1, int(dets.class_id[i])))
    matched = np.zeros(len(gt_xyxy), dtype=bool)
    matched[taken[taken >= 0]] = True
    pairs.extend((int(c), -1) for c, m in zip(gt_cls, matched, strict=True) if not m)
    return tp, fp, pairs


def ground_truth(image_path: Path, nc: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """YOLO labels of an image -> (xyxy in original pixels, class ids)."""
    from models.data.formats import label_path_for

    labels = read_labels(label_path_for(image_path), nc)
    h, w = shape
    xyxy = np.empty((len(labels), 4), np.float32)
    xyxy[:, 0] = (labels[:, 1] - labels[:, 3] / 2) * w
    xyxy[:, 1] = (labels[:, 2] - labels[:, 4] / 2) * h
    xyxy[:, 2] = (labels[:, 1] + labels[:, 3] / 2) * w
    xyxy[:, 3] = (labels[:, 2] + labels[:, 4] / 2) * h
    return xyxy, labels[:, 0].astype(np.int64)


def coco_map(
    gts: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]], dets: list[Detections], names: Sequence[str]
) -> dict[str, Any]:
    """mAP@0.5 and mAP@0.5:0.95, overall and per class, computed by pycocotools' COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for img_id, ((xyxy, cls, (h, w)), det) in enumerate(zip(gts, dets, strict=True)):
        images.append({"id": img_id, "width": w, "height": h})
        for box, c in zip(xyxy, cls, strict=True):
            bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img_id,
                    "category_id": int(c),
                    "bbox": [float(box[0]), float(box[1]), bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        for d in det:
            results.append(
                {
                    "image_id": img_id,
                    "category_id": d.class_id,
                    "score": d.confidence,
                    "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1],
                }
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(names)]
    per_class = {n: {"map50": 0.0, "map50_95": 0.0, "instances": 0} for n in names}
    for a in annotations:
        per_class[names[a["category_id"]]]["instances"] += 1
    if not results or not annotations:
        return {"map50": 0.0, "map50_95": 0.0, "per_class": per_class, "pr_curves": {}}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        # "info": pycocotools 2.0.10 copies it in loadRes and raises KeyError without it
        gt.dataset = {"info": {}, "images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    pr_curves = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        if per_class[name]["instances"] == 0:
            continue
        per_class[name]["map50_95"] = float(np.mean(p[p > -1])) if (p > -1).any() else 0.0
        p50 = p[0]
        per_class[name]["map50"] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else 0.0
        pr_curves[name] = np.where(p50 > -1, p50, 0.0).tolist()
    return {
        "map50": float(ev.stats[1]),
        "map50_95": float(ev.stats[0]),
        "per_class": per_class,
        "pr_curves": pr_curves,
    }


def evaluate(
    detector: Detector,
    image_paths: Sequence[Path],
    nc: int,
    batch_size: int = 16,
    progress: bool = False,
    *,
    keep_serving_boxes: bool = False,
) -> dict[str, Any]:
    """Score ``detector`` on ``image_paths``; returns map50, map50_95, per_class, precision, recall,
    images, images_per_second, and a confusion matrix at the serving thresholds. ``keep_serving_boxes``:
    also ``_serving_boxes``, per image (boxes as the service finds them (its NMS, one class per box) down
    to conf EVAL_CONF, true xyxy, true classes): what operating points are chosen on."""
    names = list(detector.names)
    gts: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
    low: list[Detections] = []
    tp = fp = n_gt = 0
    confusion = np.zeros((nc + 1, nc + 1), dtype=np.int64)  # rows: true (last = background), cols: predicted
    samples: list[tuple[Path, Detections]] = []
    serving_boxes: list[tuple[Detections, np.ndarray, np.ndarray]] = []
    seconds = 0.0
    iterator = range(0, len(image_paths), batch_size)
    if progress:
        from tqdm import tqdm

        from models.progress import interactive

        # a live bar on a terminal only: redirected to a file it would be a stream of carriage returns
        iterator = tqdm(iterator, desc="evaluate", unit="batch", disable=not interactive())
    for start in iterator:
        paths = image_paths[start : start + batch_size]
        images = []
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"{p}: cannot read image")
            images.append(img)
        t0 = time.perf_counter()
        batch, params = detector.preprocess(images)
        raw = detector.run(batch)
        dets_low = detector.postprocess(raw, params, EVAL_CONF, EVAL_IOU, EVAL_MAX_DET, multi_label=True)
        seconds += time.perf_counter() - t0
        dets_srv = detector.postprocess(raw, params, SERVE_CONF, SERVE_IOU, 300)
        # the service's NMS keeps the same boxes above any confidence whatever its threshold, so one
        # pass at EVAL_CONF holds the service's boxes at every threshold
        dets_all = (detector.postprocess(raw, params, EVAL_CONF, SERVE_IOU, 300) if keep_serving_boxes
                    else [None] * len(paths))
        for p, img, d_low, d_srv, d_all in zip(paths, images, dets_low, dets_srv, dets_all, strict=True):
            xyxy, cls = ground_truth(Path(p), nc, img.shape[:2])
            gts.append((xyxy, cls, img.shape[:2]))
            low.append(d_low)
            if d_all is not None:
                serving_boxes.append((d_all, xyxy, cls))
            t, f, pairs = match_at_threshold(d_srv, xyxy, cls)
            tp, fp, n_gt = tp + t, fp + f, n_gt + len(cls)
            for true_c, pred_c in pairs:
                confusion[true_c if true_c >= 0 else nc, pred_c if pred_c >= 0 else nc] += 1
            if len(samples) < 16:
                samples.append((Path(p), d_srv))
    scores = coco_map(gts, low, names)
    return {
        "map50": scores["map50"],
        "map50_95": scores["map50_95"],
        "per_class": scores["per_class"],
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(n_gt, 1),
        "images": len(image_paths),
        "instances": n_gt,
        "images_per_second": len(image_paths) / seconds if seconds else 0.0,
        "serving_thresholds": {"conf": SERVE_CONF, "iou": SERVE_IOU},
        "confusion_matrix": confusion.tolist(),
        "pr_curves": scores["pr_curves"],
        "_samples": samples,
        **({"_serving_boxes": serving_boxes} if keep_serving_boxes else {}),
    }


def fitness(metrics: dict[str, Any]) -> float:
    """Checkpoint selection: 0.1 mAP50 + 0.9 mAP50-95 (YOLOv5)."""
    return 0.1 * metrics["map50"] + 0.9 * metrics["map50_95"]


def split_paths(spec: DataSpec, split: str) -> list[Path]:
    paths = getattr(spec, split, None)
    if not paths:
        from app.errors import UserError

        raise UserError(f"{spec.yaml_path}: split {split!r} is not defined or empty")
    return list(paths)
