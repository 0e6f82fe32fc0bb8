"""The journal record of an ``InspectionResult``: one JSON-ready dict, built from the result's own
fields, so a field added to ``InspectionResult`` is journaled without editing this module (or, if
its type has no encoding here, refused when this module is imported). Lossless: numbers as JSON
numbers (float32 boxes and scores come back bit for bit), times ISO 8601 with their UTC offset.

Record layout (one JSON object per journal line): every plain field under its own name, the times as
ISO strings, ``timings`` as [decode, inference, postprocess, total] ms, and the detections as
``names``, ``xyxy``, ``confidence``, ``class_id``. A record written before a field existed reads
back with that field's default."""

from __future__ import annotations

import types
from dataclasses import MISSING, fields
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from app.detections import Detections
from app.inspection.rules import InspectionResult, Timings

# the image travels as its file: the frame is written (image_path) before its result is journaled
NOT_JOURNALED = frozenset({"image", "image_bytes"})
_PLAIN = (str, int, float, bool, type(None))
_DETECTION_KEYS = ("names", "xyxy", "confidence", "class_id")


def _is_plain(hint: Any) -> bool:
    if get_origin(hint) is Literal:
        return True
    if get_origin(hint) in (Union, types.UnionType):
        return all(_is_plain(arg) for arg in get_args(hint))
    return hint in _PLAIN


def _kind(name: str, hint: Any) -> str:
    if hint is datetime:
        return "time"
    if hint is Timings:
        return "timings"
    if hint is Detections:
        return "detections"
    if _is_plain(hint):
        return "plain"
    raise TypeError(f"the journal has no encoding for InspectionResult.{name} ({hint}): "
                    "give it one in app.inspection.codec, or list it in NOT_JOURNALED")


_HINTS = get_type_hints(InspectionResult)
_FIELDS = {f.name: _kind(f.name, _HINTS[f.name]) for f in fields(InspectionResult)
           if f.name not in NOT_JOURNALED}
_DEFAULTS = {f.name for f in fields(InspectionResult) if f.default is not MISSING}
_TIMING_FIELDS = tuple(f.name for f in fields(Timings))
if list(_FIELDS.values()).count("detections") > 1:
    raise TypeError("the journal record holds one Detections field")


def to_record(result: InspectionResult) -> dict[str, Any]:
    """The journal record of ``result`` (its image, if any, is already a file named in image_path)."""
    rec: dict[str, Any] = {}
    for name, kind in _FIELDS.items():
        value = getattr(result, name)
        if kind == "time":
            rec[name] = value.isoformat()
        elif kind == "timings":
            rec[name] = [float(getattr(value, t)) for t in _TIMING_FIELDS]
        elif kind == "detections":
            rec.update(names=list(value.names), xyxy=value.xyxy.tolist(),
                       confidence=value.confidence.tolist(), class_id=value.class_id.tolist())
        else:
            rec[name] = value
    return rec


def from_record(rec: dict[str, Any]) -> InspectionResult:
    """The result a journal record holds; raises KeyError/TypeError/ValueError for a broken record."""
    values: dict[str, Any] = {}
    for name, kind in _FIELDS.items():
        if kind == "detections":
            names, xyxy, confidence, class_id = (rec[k] for k in _DETECTION_KEYS)
            values[name] = Detections(xyxy, confidence, class_id, tuple(names))
        elif name not in rec and name in _DEFAULTS:
            continue  # written before this field existed
        elif kind == "time":
            values[name] = datetime.fromisoformat(rec[name])
        elif kind == "timings":
            values[name] = Timings(*rec[name])
        else:
            values[name] = rec[name]
    return InspectionResult(**values)
