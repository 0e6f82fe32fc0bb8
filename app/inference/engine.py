"""The detector: one ONNX Runtime session, warm-up at load, batch preprocess -> run -> postprocess."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.detections import Detections
from app.errors import UserError
from app.inference.metadata import ModelMetadata, parse_metadata
from app.inference.postprocess import MAX_CANDIDATES, detect_layout, num_classes_of, postprocess
from app.inference.preprocess import Letterbox, fitted_size, make_batch
from app.inference.providers import choose_providers

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """The model file is missing or ONNX Runtime cannot load it."""


def file_digest(path: Path, length: int = 8) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


class Engine:
    """``Engine(model_path).detect([bgr, ...])`` -> one ``Detections`` per frame.

    The split steps ``preprocess`` / ``run`` / ``postprocess`` are public so callers can time them
    and batch frames from several sources."""

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None,
                 intra_op_threads: int = 0, inter_op_threads: int = 1, *,
                 trt_cache_dir: str | Path | None = None, warmup: bool = True) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelLoadError(f"model file not found: {self.model_path}")
        self.available_providers: list[str] = list(ort.get_available_providers())
        specs, self.provider_warnings = choose_providers(
            self.available_providers, providers, Path(trt_cache_dir) if trt_cache_dir else None)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = int(inter_op_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=options, providers=specs)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"cannot load {self.model_path}: {exc}") from exc
        self.providers: list[str] = list(self.session.get_providers())
        self.provider: str = self.providers[0]

        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_shape: list = list(inp.shape)
        if len(self.input_shape) != 4:
            raise ModelLoadError(f"{self.model_path}: input must be [N, 3, H, W], got {self.input_shape}")
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        self.output_name: str = "output0" if "output0" in names else names[0]
        batch_dim = self.input_shape[0]
        self.fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        static_hw = tuple(self.input_shape[2:4])
        input_hw = static_hw if all(isinstance(d, int) and d > 0 for d in static_hw) else None
        # a model exported with free height and width takes each batch at the smallest rectangle that
        # holds its frames (256x192 for 4:3 frames instead of 256x256 with a quarter of padding)
        self.rect: bool = input_hw is None

        props = self.session.get_modelmeta().custom_metadata_map
        default_version = f"{self.model_path.stem}-{file_digest(self.model_path)}"
        self.metadata: ModelMetadata = parse_metadata(props, input_hw=input_hw,
                                                      default_version=default_version)
        if input_hw is not None and tuple(self.metadata.imgsz) != input_hw:
            log.warning("metadata imgsz %s differs from the model input %s; using the input",
                        list(self.metadata.imgsz), list(input_hw))
            self.metadata.imgsz = (int(input_hw[0]), int(input_hw[1]))
        self.layout: str | None = self.metadata.layout
        if warmup:
            self.warmup()
        log.info("model %s (version %s, layout %s, %d classes) on %s", self.model_path.name,
                 self.metadata.version, self.layout, len(self.metadata.names), self.provider)

    # -- properties -------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return self.metadata.names

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.metadata.imgsz

    @property
    def version(self) -> str:
        return self.metadata.version

    # -- steps --------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One run on a blank frame: allocates buffers (and builds TensorRT engines) before traffic."""
        h, w = self.imgsz
        raw = self.run(np.full((1, 3, h, w), 114 / 255, dtype=np.float32))
        self._learn_output(raw.shape)

    def _learn_output(self, shape: Sequence[int]) -> None:
        nc = len(self.metadata.names) or None
        if self.layout is None:
            self.layout = detect_layout(shape, nc)
            self.metadata.layout = self.layout
        if not self.metadata.names:
            count = num_classes_of(shape, self.layout)
            self.metadata.names = tuple(f"class{i}" for i in range(max(count, 0)))

    def fit_size(self, imgsz: int | None = None) -> tuple[int, int]:
        """(h, w) that frames are letterboxed into: the model's ``imgsz``, or, for a free-size model,
        ``imgsz`` x ``imgsz`` (a camera's ``imgsz``: the longer side the model sees its frames at).
        ValueError when the model cannot take it (fixed input, or not a multiple of the stride)."""
        if imgsz is None or (imgsz, imgsz) == self.imgsz:
            return self.imgsz
        if not self.rect:
            h, w = self.imgsz
            raise ValueError(f"imgsz {imgsz}: this model's input is fixed at {h}x{w}; export it with "
                             "--dynamic to choose the input size per camera")
        step = max(self.metadata.stride or (32,))
        if imgsz < step or imgsz % step:
            raise ValueError(f"imgsz {imgsz}: must be a multiple of the model's largest stride ({step})")
        return imgsz, imgsz

    def input_size(self, images: Sequence[np.ndarray], imgsz: int | None = None) -> tuple[int, int]:
        """(h, w) of the model input for a batch of these frames: ``imgsz``, or with a free-size model
        the smallest multiple of the largest stride that holds every frame letterboxed to ``imgsz``."""
        fit = self.fit_size(imgsz)
        if not self.rect:
            return fit
        out_h, out_w = fit
        step = max(self.metadata.stride or (32,))
        h_need = w_need = 0
        for image in images:
            new_h, new_w = fitted_size(*image.shape[:2], fit)  # what letterbox will draw
            h_need = max(h_need, min(out_h, -(-new_h // step) * step))
            w_need = max(w_need, min(out_w, -(-new_w // step) * step))
        return h_need, w_need

    def preprocess(self, images: Sequence[np.ndarray], imgsz: int | None = None
                   ) -> tuple[np.ndarray, list[Letterbox]]:
        return make_batch(images, self.input_size(images, imgsz))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for a [N, 3, H, W] batch; a model with a fixed batch size gets chunks."""
        n = batch.shape[0]
        if self.fixed_batch is None or self.fixed_batch == n:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        size = self.fixed_batch
        parts = []
        for start in range(0, n, size):
            chunk = batch[start:start + size]
            if len(chunk) < size:
                pad = np.zeros((size - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                out = self.session.run([self.output_name], {self.input_name: np.concatenate([chunk, pad])})[0]
                parts.append(out[:len(chunk)])
            else:
                parts.append(self.session.run([self.output_name], {self.input_name: chunk})[0])
        return np.concatenate(parts, axis=0)

    def postprocess(self, raw: np.ndarray, params: Sequence[Letterbox], conf_threshold: float = 0.25,
                    iou_threshold: float = 0.45, max_det: int = 300, *,
                    max_candidates: int = MAX_CANDIDATES, multi_label: bool = False) -> list[Detections]:
        if self.layout is None:
            self._learn_output(raw.shape)
        return postprocess(raw, params, self.layout, self.names, conf_threshold, iou_threshold, max_det,
                           max_candidates=max_candidates, multi_label=multi_label)

    def detect(self, images: Sequence[np.ndarray], conf_threshold: float = 0.25, iou_threshold: float = 0.45,
               max_det: int = 300, *, multi_label: bool = False, imgsz: int | None = None
               ) -> list[Detections]:
        if not images:
            return []
        batch, params = self.preprocess(images, imgsz)
        raw = self.run(batch)
        return self.postprocess(raw, params, conf_threshold, iou_threshold, max_det, multi_label=multi_label)

    def info(self) -> dict:
        return {
            "path": str(self.model_path), "version": self.version, "names": list(self.names),
            "imgsz": list(self.imgsz), "layout": self.layout, "provider": self.provider,
            "providers": self.providers, "available_providers": self.available_providers,
            "input_shape": [d if isinstance(d, int) else str(d) for d in self.input_shape],
            "quantization": self.metadata.quantization, "stride": list(self.metadata.stride),
            "anchors": self.metadata.anchors,
            "rect": self.rect, "operating_points": self.metadata.operating_points,
        }
