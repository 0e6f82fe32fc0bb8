"""ONNX Runtime inference. Imports only numpy, OpenCV, onnxruntime and the standard library, so it
runs on machines without the web stack (GPU boxes, the `models` evaluation)."""

from app.inference.engine import Engine, ModelLoadError
from app.inference.metadata import ModelMetadata, parse_metadata
from app.inference.preprocess import Letterbox, letterbox, make_batch

__all__ = ["Engine", "Letterbox", "ModelLoadError", "ModelMetadata", "letterbox", "make_batch",
           "parse_metadata"]
