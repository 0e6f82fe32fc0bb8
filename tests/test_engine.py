"""app.inference: decoding of both output layouts, class-aware NMS, letterbox mapping, metadata,
provider choice. The models are real ONNX graphs (built in conftest) with known outputs."""

from __future__ import annotations

import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

from app.inference import Engine, letterbox, make_batch, parse_metadata
from app.inference.postprocess import batched_nms, detect_layout, nms
from app.inference.providers import choose_providers

NAMES = ["a", "b", "c"]
META = {"names": NAMES, "imgsz": [64, 64], "stride": [8, 16, 32], "version": "t1"}


def yolov5_rows() -> np.ndarray:
    """Raw rows [cx, cy, w, h, obj, cls0, cls1, cls2] in 64x64 input pixels, with the expected outcome
    at conf 0.25 / IoU 0.45 in the comments; then 14 empty anchors (a real head has more anchors than
    channels, which is what layout detection from the shape relies on)."""
    rows = np.array([
        [20, 20, 10, 10, 0.9, 0.9, 0.05, 0.05],   # a 0.81: kept
        [21, 20, 10, 10, 0.9, 0.8, 0.05, 0.05],   # a 0.72: IoU 0.82 with row 0 -> suppressed
        [21, 21, 10, 10, 0.9, 0.05, 0.7, 0.05],   # b 0.63: same place, other class -> kept
        [50, 50, 8, 4, 0.6, 0.1, 0.1, 0.7],       # c 0.42: kept
        [40, 10, 6, 6, 0.2, 0.1, 0.1, 0.99],      # c 0.198 < 0.25 -> dropped by the threshold
        [10, 50, 4, 4, 0.99, 0.2, 0.2, 0.2],      # best 0.198 -> dropped
    ], dtype=np.float32)
    return np.concatenate([rows, np.zeros((14, 8), np.float32)])


EXPECTED = [  # (x1, y1, x2, y2, score, class) in a 64x64 image (no letterbox change)
    (15, 15, 25, 25, 0.81, 0),
    (16, 16, 26, 26, 0.63, 1),
    (46, 48, 54, 52, 0.42, 2),
]


def ultralytics_rows() -> np.ndarray:
    """The same boxes in the ultralytics layout [4+nc, A]: scores already final (obj * cls)."""
    y = yolov5_rows()
    scores = y[:, 5:] * y[:, 4:5]
    return np.concatenate([y[:, :4], scores], axis=1).T.copy()


def assert_detections(dets, expected, atol=1e-3):
    got = sorted(zip(dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist(), strict=True),
                 key=lambda t: -t[1])
    assert len(got) == len(expected), got
    for (box, score, cls), (x1, y1, x2, y2, e_score, e_cls) in zip(got, expected, strict=True):
        np.testing.assert_allclose(box, [x1, y1, x2, y2], atol=atol)
        assert score == pytest.approx(e_score, abs=1e-4)
        assert cls == e_cls


@pytest.mark.parametrize("layout", ["yolov5", "ultralytics"])
def test_decode_and_nms_both_layouts(make_detector_model, layout):
    preds = yolov5_rows() if layout == "yolov5" else ultralytics_rows()
    path = make_detector_model(preds, layout=layout, metadata={**META, "layout": layout})
    engine = Engine(path, providers=["cpu"])
    assert engine.layout == layout
    frame = np.zeros((64, 64, 3), np.uint8)
    [dets] = engine.detect([frame], conf_threshold=0.25, iou_threshold=0.45)
    assert_detections(dets, EXPECTED)
    assert [d.class_name for d in dets] == ["a", "b", "c"]


@pytest.mark.parametrize("layout", ["yolov5", "ultralytics"])
def test_layout_detected_from_shape_without_metadata(make_detector_model, layout, caplog):
    preds = yolov5_rows() if layout == "yolov5" else ultralytics_rows()
    path = make_detector_model(preds, name=f"bare-{layout}.onnx", layout=layout)
    with caplog.at_level(logging.WARNING):
        engine = Engine(path)
    assert engine.layout == layout
    assert engine.names == ("class0", "class1", "class2")
    assert engine.imgsz == (64, 64)  # from the static input shape
    assert engine.version.startswith(f"bare-{layout}-")
    assert any("no 'names'" in r.message for r in caplog.records)
    [dets] = engine.detect([np.zeros((64, 64, 3), np.uint8)])
    assert_detections(dets, EXPECTED)


def test_iou_threshold_and_max_det(make_detector_model):
    engine = Engine(make_detector_model(yolov5_rows(), metadata=META))
    frame = np.zeros((64, 64, 3), np.uint8)
    [loose] = engine.detect([frame], conf_threshold=0.25, iou_threshold=0.9)  # row 1 survives now
    assert len(loose) == 4
    [capped] = engine.detect([frame], conf_threshold=0.25, iou_threshold=0.45, max_det=2)
    assert_detections(capped, EXPECTED[:2])
    [low] = engine.detect([frame], conf_threshold=0.001, iou_threshold=0.45, multi_label=True)
    # multi-label at mAP thresholds: every class score above 0.001 becomes a candidate
    assert len(low) > len(loose)


def test_boxes_map_back_to_non_square_image(make_detector_model):
    # 320x160 image -> 64x64 input: scale 0.2, resized to 64x32, padded 16 rows top and bottom.
    engine = Engine(make_detector_model(yolov5_rows(), metadata=META))
    [dets] = engine.detect([np.zeros((160, 320, 3), np.uint8)])
    expected = [((x1 - 0) / 0.2, min(max((y1 - 16) / 0.2, 0), 160), (x2 - 0) / 0.2,
                 min(max((y2 - 16) / 0.2, 0), 160), s, c) for x1, y1, x2, y2, s, c in EXPECTED]
    assert_detections(dets, expected)
    assert expected[0][:4] == (75.0, 0.0, 125.0, 45.0)  # clipped at the top edge


def test_letterbox_round_trip_exact():
    image = np.random.default_rng(0).integers(0, 255, (150, 400, 3), dtype=np.uint8)
    boxed, lb = letterbox(image, (128, 96))  # (h, w): width-limited
    assert boxed.shape == (128, 96, 3)
    assert lb.pad_x == 0 and lb.pad_y == (128 - 36) // 2
    assert (boxed[: lb.pad_y] == 114).all() and (boxed[lb.pad_y + 36:] == 114).all()
    original = np.array([[10, 20, 390, 140], [0, 0, 400, 150]], np.float32)
    in_input = original.copy()
    in_input[:, [0, 2]] = original[:, [0, 2]] * lb.scale_x + lb.pad_x
    in_input[:, [1, 3]] = original[:, [1, 3]] * lb.scale_y + lb.pad_y
    np.testing.assert_allclose(lb.to_original(in_input), original, atol=1e-3)


def test_resize_shrinks_like_inter_area_and_enlarges_bilinearly():
    from app.inference.preprocess import resize

    # a textured frame at camera size (the simulator's strip: real steel images)
    from app.ingest.simulator import StripSimulator

    frame, _truth = StripSimulator(None, 640, 480).frame(7)
    area = cv2.resize(frame, (256, 192), interpolation=cv2.INTER_AREA)
    fast = resize(frame, 256, 192)  # 2.5x: whole-factor INTER_AREA, then bilinear
    assert fast.shape == area.shape and fast.dtype == np.uint8
    diff = np.abs(fast.astype(np.int16) - area.astype(np.int16))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 12  # antialiased: no skipped-pixel aliasing
    naive = cv2.resize(frame, (256, 192), interpolation=cv2.INTER_NEAREST)
    assert np.abs(naive.astype(np.int16) - area.astype(np.int16)).mean() > 2 * diff.mean()
    # a whole factor is exactly INTER_AREA; enlarging is bilinear
    np.testing.assert_array_equal(resize(frame, 320, 240),
                                  cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))
    small = frame[:200, :200]
    np.testing.assert_array_equal(resize(small, 256, 256),
                                  cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(resize(frame, 600, 450),  # a shrink below 2x: INTER_AREA itself
                                  cv2.resize(frame, (600, 450), interpolation=cv2.INTER_AREA))


def test_make_batch_is_rgb_0_1_nchw():
    bgr = np.zeros((10, 10, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    grey = np.full((20, 10), 51, np.uint8)
    batch, params = make_batch([bgr, grey], (10, 10))
    assert batch.shape == (2, 3, 10, 10) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 2], 1.0)  # blue lands in the last (B of RGB) channel
    np.testing.assert_allclose(batch[0, 0], 0.0)
    assert batch[1, :, :, 3:7].max() == pytest.approx(0.2)  # the grey frame, centred
    np.testing.assert_allclose(batch[1, :, :, 0], 114 / 255)  # the padding column
    assert params[1].pad_x == 2 and params[1].scale_y == 0.5


def test_batch_and_fixed_batch_of_one(make_detector_model):
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8),
              np.zeros((64, 64, 3), np.uint8)]
    dynamic = Engine(make_detector_model(yolov5_rows(), metadata=META))
    fixed = Engine(make_detector_model(yolov5_rows(), metadata=META, batch=1))
    assert dynamic.fixed_batch is None and fixed.fixed_batch == 1
    a = dynamic.detect(frames)
    b = fixed.detect(frames)
    assert len(a) == len(b) == 3
    for da, db in zip(a, b, strict=True):
        np.testing.assert_allclose(da.xyxy, db.xyxy)
    assert not np.allclose(a[0].xyxy, a[1].xyxy)  # the 64x32 frame maps differently


def test_split_steps_equal_detect(make_detector_model):
    engine = Engine(make_detector_model(yolov5_rows(), metadata=META))
    frames = [np.zeros((100, 50, 3), np.uint8)]
    batch, params = engine.preprocess(frames)
    raw = engine.run(batch)
    assert raw.shape == (1, 20, 8)
    [split] = engine.postprocess(raw, params, 0.25, 0.45, 300)
    [whole] = engine.detect(frames)
    np.testing.assert_allclose(split.xyxy, whole.xyxy)


def test_numpy_nms_matches_opencv():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (400, 2)).astype(np.float32)
    wh = rng.uniform(5, 60, (400, 2)).astype(np.float32)
    xyxy = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0.3, 1.0, 400).astype(np.float32)
    classes = rng.integers(0, 3, 400)
    ours = set(batched_nms(xyxy, scores, classes, 0.5, 10_000).tolist())
    ref = cv2.dnn.NMSBoxesBatched(np.concatenate([xy, wh], axis=1).tolist(), scores.tolist(),
                                  classes.tolist(), 0.0, 0.5)
    assert ours == set(np.asarray(ref).reshape(-1).tolist())
    assert len(nms(xyxy, scores, 0.5, 7)) == 7


def test_nms_prefix_extension_equals_full_greedy():
    # 3000 best-scored boxes all on one spot: the first prefix keeps one box, so the prefix must grow
    rng = np.random.default_rng(2)
    same = np.tile([[100, 100, 150, 150]], (3000, 1)) + rng.uniform(-1, 1, (3000, 4))
    xy = rng.uniform(0, 600, (2000, 2))
    spread = np.concatenate([xy, xy + rng.uniform(5, 40, (2000, 2))], axis=1)
    xyxy = np.concatenate([same, spread]).astype(np.float32)
    scores = np.concatenate([rng.uniform(0.9, 1.0, 3000), rng.uniform(0.1, 0.8, 2000)]).astype(np.float32)
    ours = nms(xyxy, scores, 0.5, 60)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    ref = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, 0.5)).reshape(-1)
    assert len(ours) == 60 and ours.tolist() == ref[:60].tolist()


def test_detect_layout_from_shape():
    assert detect_layout((1, 25200, 11), 6) == "yolov5"
    assert detect_layout((1, 10, 8400), 6) == "ultralytics"
    assert detect_layout((1, 10, 8400)) == "ultralytics"
    assert detect_layout((1, 25200, 85)) == "yolov5"
    with pytest.raises(ValueError):
        detect_layout((1, 2, 3, 4))


def test_metadata_ours_ultralytics_and_missing(caplog):
    ours = parse_metadata({"names": '["crazing", "inclusion"]', "imgsz": "[320, 640]",
                           "stride": "[8, 16, 32]",
                           "anchors": "[[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], "
                                      "[116, 90, 156, 198, 373, 326]]",
                           "layout": '"yolov5"', "version": '"2026.11-a"', "quantization": '"int8-qdq"'})
    assert ours.names == ("crazing", "inclusion") and ours.imgsz == (320, 640)
    assert ours.anchors[2] == [116, 90, 156, 198, 373, 326] and ours.layout == "yolov5"
    assert ours.version == "2026.11-a" and ours.quantization == "int8-qdq" and not ours.warnings

    ultra = parse_metadata({"names": "{0: 'crazing', 1: 'inclusion', 2: 'patches'}", "imgsz": "[640, 640]",
                            "stride": "32", "author": "Ultralytics", "version": "8.3.0", "task": "detect"})
    assert ultra.names == ("crazing", "inclusion", "patches")
    assert ultra.imgsz == (640, 640) and ultra.stride == (8, 16, 32) and ultra.layout == "ultralytics"

    with caplog.at_level(logging.WARNING):
        bare = parse_metadata({}, input_hw=(416, 416), default_version="m-abc")
    assert bare.names == () and bare.imgsz == (416, 416) and bare.version == "m-abc" and bare.layout is None
    assert len(bare.warnings) == 3 and sum("model metadata" in r.message for r in caplog.records) == 3


def test_metadata_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    meta = parse_metadata({"names": f"__import__('pathlib').Path({str(marker)!r}).touch()"})
    assert not marker.exists()
    assert meta.names == () and any("cannot read names" in w for w in meta.warnings)


def test_requested_provider_absent_falls_back_to_cpu(make_detector_model, caplog):
    with caplog.at_level(logging.WARNING, logger="app.inference.providers"):
        engine = Engine(make_detector_model(yolov5_rows(), metadata=META),
                        providers=["CUDAExecutionProvider"])
    assert engine.provider == "CPUExecutionProvider"
    assert any("CUDAExecutionProvider" in r.message and "not available" in r.message for r in caplog.records)
    assert engine.provider_warnings


def test_provider_order_and_tensorrt_options(tmp_path):
    available = ["CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider",
                 "TensorrtExecutionProvider"]
    specs, warnings = choose_providers(available, None, tmp_path / "trt")
    assert [s if isinstance(s, str) else s[0] for s in specs] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt_opts = specs[0][1]
    assert trt_opts == {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(tmp_path / "trt")}
    assert (tmp_path / "trt").is_dir() and not warnings
    specs, warnings = choose_providers(available, ["dml", "cuda"])
    assert specs == ["CUDAExecutionProvider", "CPUExecutionProvider"] and len(warnings) == 1


def test_missing_model_file_is_a_clear_error(tmp_path):
    from app.inference import ModelLoadError

    with pytest.raises(ModelLoadError, match="not found"):
        Engine(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        Engine(bad)


def test_inference_package_imports_no_web_stack():
    code = ("import sys, app.inference; bad = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'fastapi', 'starlette', 'sqlalchemy', 'prometheus_client', 'torch'}); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_free_size_model_takes_4_3_frames_without_padding(neu_sample):
    """The shipped export has free height and width: a 640x480 frame goes in as 256x192 (a quarter
    less work than 256x256), and finds what the padded square input finds."""
    from conftest import SHIPPED_INT8

    from app.inference.postprocess import box_iou
    from app.ingest.simulator import StripSimulator

    engine = Engine(SHIPPED_INT8, intra_op_threads=1)
    assert engine.rect and engine.imgsz == (256, 256) and engine.info()["rect"]
    sim = StripSimulator(neu_sample / "images", 320, 240, 30.0, 120.0, 0)
    frames = [sim.frame(i)[0] for i in (0, 37, 74, 111, 148, 185)]
    assert engine.input_size(frames) == (192, 256)
    assert engine.input_size([frames[0], np.zeros((300, 200, 3), np.uint8)]) == (256, 256)  # mixed batch
    assert engine.input_size([np.zeros((200, 200, 3), np.uint8)]) == (256, 256)
    batch, params = engine.preprocess(frames[:2])
    assert batch.shape == (2, 3, 192, 256) and params[0].pad_x == params[0].pad_y == 0
    assert engine.run(batch).shape == (2, (24 * 32 + 12 * 16 + 6 * 8) * 3, 11)

    rect = engine.detect(frames)
    engine.rect = False  # the same model fed padded 256x256 squares
    square = engine.detect(frames)
    matched = sum(int(((box_iou(a.xyxy, b.xyxy) >= 0.7) & (a.class_id[:, None] == b.class_id[None, :]))
                      .any(1).sum()) for a, b in zip(square, rect, strict=True) if len(a) and len(b))
    total = sum(len(a) for a in square)
    assert total >= 10 and matched >= 0.8 * total, (matched, total)  # measured: 20 of 22
    for d in rect:
        assert (d.xyxy[:, [0, 2]] <= 320).all() and (d.xyxy[:, [1, 3]] <= 240).all()
