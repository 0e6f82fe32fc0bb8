"""Model metadata from ONNX ``metadata_props``: our JSON-encoded keys and ultralytics-style reprs.

Values are parsed with ``json.loads`` first, then ``ast.literal_eval`` (never ``eval``). Anything
missing gets a default and a warning, so an unannotated model still runs."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LAYOUTS = ("yolov5", "ultralytics")
DEFAULT_IMGSZ = (640, 640)
DEFAULT_STRIDE = (8, 16, 32)
OPERATING_POINTS_KEY = "operating_points"  # per-class confidence thresholds chosen on held-out images


@dataclass
class ModelMetadata:
    names: tuple[str, ...]
    imgsz: tuple[int, int]  # (h, w)
    stride: tuple[int, ...]
    anchors: list[list[float]] | None
    layout: str | None  # None: decided from the output shape
    version: str
    task: str = "detect"
    quantization: str | None = None
    # how the per-class thresholds were chosen and what they score: {"method", ..., "classes": {name:
    # {"threshold", "precision", "recall", "f1", "instances", ...}}}; None: the model carries none
    operating_points: dict[str, Any] | None = None
    raw: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names), "imgsz": list(self.imgsz), "stride": list(self.stride),
            "anchors": self.anchors, "layout": self.layout, "version": self.version, "task": self.task,
            "quantization": self.quantization, "operating_points": self.operating_points,
        }

    @property
    def class_thresholds(self) -> dict[str, float]:
        """Class name -> the model's own confidence threshold (its operating point); empty without."""
        classes = (self.operating_points or {}).get("classes", {})
        return {name: float(point["threshold"]) for name, point in classes.items()}


def parse_value(text: str) -> Any:
    """JSON first (our exports), then a Python literal (ultralytics writes dict/list reprs)."""
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _parse_names(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, Mapping):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError):
            return None
        if [k for k, _ in items] != list(range(len(items))):
            return None
        return tuple(v for _, v in items)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(str(v) for v in value)
    return None


def _parse_imgsz(value: Any) -> tuple[int, int] | None:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value), int(value)
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            dims = [int(v) for v in value]
            if len(dims) == 1:
                return dims[0], dims[0]
            if len(dims) == 2:
                return dims[0], dims[1]
    except (TypeError, ValueError):
        return None
    return None


def _parse_stride(value: Any) -> tuple[int, ...] | None:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # ultralytics stores only the largest stride
            top = int(value)
            return tuple(s for s in (8, 16, 32, 64) if s <= top) or (top,)
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return None


def _parse_anchors(value: Any) -> list[list[float]] | None:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return None
    try:
        return [[float(x) for x in level] for level in value]
    except (TypeError, ValueError):
        return None


def _parse_operating_points(value: Any, names: Sequence[str], warn: Any) -> dict[str, Any] | None:
    """The ``operating_points`` record, with only the classes the model has and a threshold in [0, 1]."""
    classes = value.get("classes") if isinstance(value, Mapping) else None
    if not isinstance(classes, Mapping):
        warn("cannot read operating_points (no 'classes' mapping); the global threshold applies")
        return None
    kept: dict[str, Any] = {}
    for name, point in classes.items():
        threshold = point.get("threshold") if isinstance(point, Mapping) else None
        if names and name not in names:
            warn(f"operating_points: unknown class {name!r} left out")
        elif (not isinstance(threshold, int | float) or isinstance(threshold, bool)
              or not 0.0 <= threshold <= 1.0):
            warn(f"operating_points: class {name!r} has no threshold in [0, 1]; left out")
        else:
            kept[str(name)] = dict(point)
    return {**value, "classes": kept}


def parse_metadata(props: Mapping[str, str], *, input_hw: tuple[int, int] | None = None,
                   default_version: str = "unknown") -> ModelMetadata:
    """Build ``ModelMetadata`` from raw ``metadata_props``; ``input_hw`` is the model's static input
    size (if any), used when ``imgsz`` is missing."""
    raw = {str(k): str(v) for k, v in props.items()}
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log.warning("model metadata: %s", msg)

    names: tuple[str, ...] = ()
    if "names" in raw:
        parsed = _parse_names(parse_value(raw["names"]))
        if parsed is None:
            warn(f"cannot read names {raw['names'][:80]!r}; class ids will be used")
        else:
            names = parsed
    else:
        warn("no 'names'; class ids will be used")

    imgsz = None
    if "imgsz" in raw:
        imgsz = _parse_imgsz(parse_value(raw["imgsz"]))
        if imgsz is None:
            warn(f"cannot read imgsz {raw['imgsz']!r}")
    if imgsz is None:
        imgsz = input_hw or DEFAULT_IMGSZ
        if "imgsz" not in raw:
            warn(f"no 'imgsz'; using {list(imgsz)}")

    stride = _parse_stride(parse_value(raw["stride"])) if "stride" in raw else None
    if stride is None:
        stride = DEFAULT_STRIDE

    anchors = _parse_anchors(parse_value(raw["anchors"])) if "anchors" in raw else None

    layout = None
    if "layout" in raw:
        value = parse_value(raw["layout"])
        if isinstance(value, str) and value.lower() in LAYOUTS:
            layout = value.lower()
        else:
            warn(f"unknown layout {raw['layout']!r}; deciding from the output shape")
    elif "author" in raw and "ultralytics" in raw["author"].lower():
        layout = "ultralytics"

    version = raw.get("version")
    if version is not None:
        parsed_version = parse_value(version)
        version = str(parsed_version) if parsed_version not in (None, "") else None
    if not version:
        version = default_version
        warn(f"no 'version'; using {version!r}")

    task = str(parse_value(raw["task"])) if "task" in raw else "detect"
    quant = parse_value(raw["quantization"]) if "quantization" in raw else None
    points = None
    if OPERATING_POINTS_KEY in raw:
        points = _parse_operating_points(parse_value(raw[OPERATING_POINTS_KEY]), names, warn)
    return ModelMetadata(
        names=names, imgsz=(int(imgsz[0]), int(imgsz[1])), stride=tuple(stride), anchors=anchors,
        layout=layout, version=version, task=task, quantization=str(quant) if quant else None,
        operating_points=points, raw=raw, warnings=warnings,
    )
