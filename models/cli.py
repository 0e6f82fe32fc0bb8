"""`defect-inspect train | evaluate | export | anchors`: thin argument parsing over the models package.
torch is imported inside the handlers, so building the parser stays cheap."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from app.errors import UserError
from app.inference.metadata import OPERATING_POINTS_KEY


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # models.device.PRECISIONS (torch is not imported here)


def add_precision_argument(p: argparse.ArgumentParser, more: str = "") -> None:
    """``--precision``, the same for every command that trains."""
    p.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="the forward pass's dtype (weights, gradients and the loss stay float32); auto: fp16 on CUDA, "
        "bf16 on a CPU with AMX (an epoch in about 0.6 of the time there), else fp32"
        + (f". {more}" if more else ""),
    )


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the detector on a YOLO data.yaml",
        description="Train YOLOv5s(+CBAM) from scratch or from an earlier checkpoint.",
    )
    p.add_argument("--data", help="data.yaml (YOLO format)")
    p.add_argument("--cfg", default="yolov5s-cbam.yaml", help="model config (file or name in models/configs)")
    p.add_argument("--hyp", default=None, help="hyperparameter YAML (default models/configs/hyp.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one hyperparameter, e.g. --set fl_gamma=1.5",
    )
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument(
        "--resume", nargs="?", const="runs/train/exp", default=None, help="resume a run folder or its last.pt"
    )
    p.add_argument("--weights", default=None,
                   help="fine-tune from an earlier checkpoint or FP32 ONNX export (other class names: "
                   "the head is re-initialised)")
    p.add_argument("--backbone", default=None,
                   help="start a fresh model from a backbone written by `defect-inspect pretrain`")
    p.add_argument(
        "--anchors",
        choices=["default", "auto", "fit"],
        default="auto",
        help="auto: fit K-means anchors when BPR < 0.98; fit: always try; default: keep config's",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", action="store_true", help="keep decoded images in RAM")
    p.add_argument("--val-interval", type=int, default=1, help="validate every N epochs (and at the end)")
    p.add_argument(
        "--time",
        type=float,
        default=None,
        metavar="MINUTES",
        help="end within this many minutes: the schedule (epochs, cosine LR, close-mosaic) is shortened "
        "to fit after each epoch, and the last epoch is validated and saved",
    )
    p.add_argument(
        "--stop-after",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop this invocation before it would run past this many minutes, the schedule unchanged "
        "(last.pt after the last whole epoch); continue the run later with --resume (and --stop-after again)",
    )
    add_precision_argument(p, "A resumed run takes this one's")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--info", action="store_true", help="print layers, parameters and GFLOPs and exit")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from models.train import Trainer, TrainOptions
    from models.yolo import CONFIG_DIR, DetectionModel, resolve_config

    if args.info:
        try:
            resolve_config(args.cfg)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from exc
        nc = 80
        if args.data:
            from models.data.formats import load_data_yaml

            nc = load_data_yaml(args.data).nc
        info = DetectionModel(args.cfg, nc=nc).info(args.imgsz)
        print(json.dumps({"cfg": args.cfg, "nc": nc, **info}))
        return 0
    if not args.data and not args.resume:
        raise UserError("--data is required (or --resume)")
    opts = TrainOptions(
        data=args.data or "",
        cfg=args.cfg,
        hyp=args.hyp or str(CONFIG_DIR / "hyp.yaml"),
        hyp_overrides=_parse_overrides(args.overrides),
        imgsz=args.imgsz,
        epochs=args.epochs,
        batch=args.batch,
        device=args.device,
        workers=args.workers,
        project=args.project,
        name=args.name,
        exist_ok=args.exist_ok,
        resume=args.resume,
        weights=args.weights,
        backbone=args.backbone,
        anchors=args.anchors,
        seed=args.seed,
        cache=args.cache,
        val_interval=args.val_interval,
        plots=not args.no_plots,
        time_limit_min=args.time,
        stop_after_min=args.stop_after,
        precision=args.precision,
    )
    if args.weights and args.backbone:
        raise UserError("--weights and --backbone exclude each other: --backbone starts a fresh model")
    for flag, minutes in (("--time", args.time), ("--stop-after", args.stop_after)):
        if minutes is not None and minutes <= 0:
            raise UserError(f"{flag} {minutes}: must be a positive number of minutes")
    result = Trainer(opts).fit()
    print(f"run folder: {result.run_dir}")
    if result.stopped_early:
        print(f"stopped after epoch {result.epochs_done} of {result.schedule.epochs} (--stop-after); "
              f"continue with: defect-inspect train --resume {result.run_dir}")
    return 0


def register_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="self-supervised (SimCLR) pretraining of the detector's backbone on unlabeled images",
        description="Learn the detector's backbone from unlabeled images (SimCLR: two augmented views "
        "of each image, NT-Xent loss). `train --backbone FILE` starts from the result.",
    )
    p.add_argument("--images", nargs="+", required=True, metavar="DIR|LIST.txt",
                   help="folders of unlabeled images (recursive) or .txt image lists (paths relative "
                   "to the list's folder)")
    p.add_argument("--out", default="runs/pretrain/backbone.pt")
    p.add_argument("--cfg", default="yolov5s-cbam.yaml", help="model config whose backbone is learnt")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=32, help="images per step (each seen as two views)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine to 1 %% of it)")
    p.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    p.add_argument("--max-images", type=int, default=None, help="use a fixed random subset of the images")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    add_precision_argument(p)
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    from models.pretrain import PretrainOptions, pretrain

    if args.epochs < 1 or args.batch < 2:
        raise UserError("--epochs must be at least 1 and --batch at least 2")
    out = pretrain(PretrainOptions(
        images=tuple(args.images), out=args.out, cfg=args.cfg, imgsz=args.imgsz, epochs=args.epochs,
        batch=args.batch, lr=args.lr, temperature=args.temperature, device=args.device,
        workers=args.workers, seed=args.seed, max_images=args.max_images, precision=args.precision,
    ))
    print(f"backbone: {out}")
    return 0


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="COCO mAP of a checkpoint (.pt) or ONNX model on a data split")
    p.add_argument("--model", required=True, help="WEIGHTS.pt or MODEL.onnx")
    p.add_argument("--data", required=True, help="data.yaml")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--providers", default=None, help="ONNX Runtime providers, comma separated")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--operating-points", action="store_true",
                   help="also choose a confidence threshold per class on this split: the point of best F1 "
                        "of the service's boxes (IoU 0.5), or see --min-precision")
    p.add_argument("--min-precision", type=float, default=None,
                   help="with --operating-points: the lowest threshold whose precision reaches this")
    p.add_argument("--operating-points-from", default=None, metavar="MODEL.onnx",
                   help="instead of choosing: take the points another model chose (its metadata), e.g. the "
                        "train-only model whose held-out images chose them for this model fitted on all "
                        "the data; reports this model's precision and recall at them on this split")
    p.add_argument("--write", action="store_true",
                   help="with --operating-points(-from): store them in the ONNX model's metadata "
                        "(`operating_points`, the service's default per-class thresholds)")
    p.add_argument("--plot", default=None,
                   help="with --operating-points(-from): PR and F1 curves to this PNG")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from models.data.formats import load_data_yaml
    from models.evaluate import evaluate, load_detector, split_paths

    if not Path(args.model).is_file():
        raise UserError(f"{args.model}: model file not found")
    spec = load_data_yaml(args.data)
    paths = split_paths(spec, args.split)
    providers = args.providers.split(",") if args.providers else None
    carried = carried_from(args.operating_points_from) if args.operating_points_from else None
    if args.operating_points and carried is not None:
        raise UserError("--operating-points chooses points, --operating-points-from takes another model's: "
                        "give one of them")
    choose = args.operating_points or carried is not None
    if not choose and (args.write or args.plot):
        raise UserError("--write and --plot go with --operating-points or --operating-points-from")
    if args.min_precision is not None and not args.operating_points:
        raise UserError("--min-precision goes with --operating-points")
    if args.min_precision is not None and not 0.0 < args.min_precision <= 1.0:
        raise UserError("--min-precision must be in (0, 1]")
    if args.write and Path(args.model).suffix != ".onnx":
        raise UserError("--write stores operating points in an ONNX model; export the checkpoint first")
    detector, info = load_detector(args.model, args.device, providers, args.threads)
    metrics = evaluate(detector, paths, spec.nc, batch_size=args.batch, progress=not args.json,
                       keep_serving_boxes=choose)
    result = {
        "model": str(args.model),
        "data": str(args.data),
        "split": args.split,
        **info,
        **{k: v for k, v in metrics.items() if not k.startswith("_") and k != "pr_curves"},
    }
    if carried is not None:
        result["operating_points"] = carry_operating_points(args, carried, metrics["_serving_boxes"],
                                                            detector.names, str(info.get("version")))
    elif choose:
        result["operating_points"] = choose_operating_points(args, metrics["_serving_boxes"], detector.names,
                                                             str(info.get("version")))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'class':<18}{'instances':>10}{'mAP50':>9}{'mAP50-95':>10}")
    for name, row in result["per_class"].items():
        print(f"{name:<18}{row['instances']:>10}{row['map50']:>9.3f}{row['map50_95']:>10.3f}")
    print(f"{'all':<18}{result['instances']:>10}{result['map50']:>9.3f}{result['map50_95']:>10.3f}")
    print(
        f"precision {result['precision']:.3f}  recall {result['recall']:.3f} at conf 0.25 / IoU 0.5; "
        f"{result['images_per_second']:.1f} images/s"
    )
    if choose:
        points = result["operating_points"]
        how = points["method"] if carried is None else f"carried from {points['carried_from']}"
        print(f"operating points ({how}, {args.split}, IoU {points['match_iou']}):")
        print(f"{'class':<18}{'threshold':>10}{'precision':>10}{'recall':>8}{'F1':>7}{'TP':>6}{'FP':>6}")
        for name, row in points["classes"].items():
            print(f"{name:<18}{row['threshold']:>10.4f}{row['precision']:>10.3f}{row['recall']:>8.3f}"
                  f"{row['f1']:>7.3f}{row['true_positives']:>6}{row['false_positives']:>6}")
        if args.write:
            print(f"stored in {args.model} (metadata '{OPERATING_POINTS_KEY}')")
    return 0


def carried_from(path: str) -> tuple[dict[str, Any], str]:
    """The operating points another ONNX model carries, and its version."""
    from app.inference import Engine

    if not Path(path).is_file() or Path(path).suffix != ".onnx":
        raise UserError(f"{path}: --operating-points-from takes an ONNX model file")
    meta = Engine(path, warmup=False).metadata
    if not meta.operating_points or not meta.operating_points["classes"]:
        raise UserError(f"{path}: no operating points to carry (choose them with evaluate --operating-points "
                        "--write)")
    return meta.operating_points, meta.version


def carry_operating_points(args: argparse.Namespace, carried: tuple[dict[str, Any], str], scored: list,
                           names: Sequence[str], version: str) -> dict[str, Any]:
    """``evaluate --operating-points-from``: this model's figures at the other model's thresholds; on
    request plot them and store the other model's record (``carried_from`` its version)."""
    from models.export import set_metadata
    from models.operating_points import carried_record, class_boxes, measured_at, metadata_props

    source, source_version = carried
    stored = carried_record(source, source_version, list(names))
    if not stored["classes"]:
        raise UserError(f"{args.operating_points_from}: its operating points name none of this model's "
                        f"classes ({', '.join(names)})")
    per_class = class_boxes(scored, len(names))
    measured = measured_at(per_class, list(names), stored, args.split, len(scored))
    if args.plot:
        from models.plots import plot_operating_points

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_operating_points(per_class, list(names), measured,
                              f"{Path(args.model).name} ({version}) on {args.split}: points carried from "
                              f"{stored['carried_from']}", Path(args.plot))
    if args.write:
        set_metadata(Path(args.model), metadata_props(stored))
    return measured


def choose_operating_points(args: argparse.Namespace, scored: list, names: Sequence[str],
                            version: str) -> dict[str, Any]:
    """``evaluate --operating-points``: choose the per-class points; on request plot and store them."""
    from models.evaluate import EVAL_CONF
    from models.export import set_metadata
    from models.operating_points import metadata_props, operating_points

    record, per_class = operating_points(scored, list(names), min_precision=args.min_precision,
                                         floor=EVAL_CONF, split=args.split)
    if args.plot:
        from models.plots import plot_operating_points

        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        rule = "best F1" if args.min_precision is None else f"precision >= {args.min_precision:g}"
        plot_operating_points(per_class, list(names), record,
                              f"{Path(args.model).name} ({version}) on {args.split}: points at {rule}",
                              Path(args.plot))
    if args.write:
        set_metadata(Path(args.model), metadata_props(record))
    return record


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (FP32, INT8 QDQ, FP16) with metadata")
    p.add_argument("--weights", required=True, help="best.pt")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--out", default=None, help="output .onnx (default next to the weights)")
    p.add_argument("--dynamic", action="store_true",
                   help="free batch size and input height/width (640x480 frames then run as 256x192)")
    p.add_argument("--int8", action="store_true", help="also write an INT8 static-QDQ model")
    p.add_argument("--calib", default=None, help="data.yaml whose training images calibrate INT8")
    p.add_argument("--calib-images", type=int, default=300)
    p.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], default="minmax")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 model for GPU providers")
    p.add_argument("--model-version", default=None, help="version string stored in the metadata")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from models.export import calibration_paths, convert_fp16, export_onnx, quantize_int8

    weights = Path(args.weights)
    if not weights.is_file():
        raise UserError(f"{weights}: checkpoint not found")
    out = Path(args.out) if args.out else weights.with_suffix(".onnx")
    fp32 = export_onnx(weights, out, args.imgsz, args.dynamic, version=args.model_version)
    print(f"FP32: {fp32}")
    if args.int8:
        if not args.calib:
            raise UserError("--int8 needs --calib DATA.yaml (training images calibrate the activations)")
        from app.inference import Engine

        imgsz = Engine(fp32, warmup=False).imgsz[0]
        int8 = quantize_int8(
            fp32,
            out.with_name(out.stem + "-int8.onnx"),
            calibration_paths(args.calib, args.calib_images),
            imgsz,
            method=args.calib_method,
        )
        print(f"INT8: {int8}")
    if args.fp16:
        print(f"FP16: {convert_fp16(fp32, out.with_name(out.stem + '-fp16.onnx'))}")
    return 0


def register_anchors(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anchors", help="BPR report of the current anchors and K-means + genetic fitted ones",
                       description="Fit anchors to a data set's training boxes and compare them with the "
                       "config's (or, with --weights, a model's). `train --anchors fit` fits the same ones.")
    p.add_argument("--data", required=True)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--cfg", default="yolov5s-cbam.yaml")
    p.add_argument("--weights", default=None,
                   help="compare with the anchors of this checkpoint or ONNX model instead of the config's")
    p.add_argument("--anchor-t", type=float, default=4.0)
    p.add_argument("--generations", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run_anchors)


def _current_anchors(args: argparse.Namespace) -> tuple[list[list[float]], str]:
    from models.yolo import load_config

    if not args.weights:
        return load_config(args.cfg)["anchors"], args.cfg
    if not Path(args.weights).is_file():
        raise UserError(f"{args.weights}: model file not found")
    if args.weights.lower().endswith(".onnx"):
        from models.onnx_weights import read_onnx

        _tensors, meta = read_onnx(args.weights)
        if "anchors" not in meta:
            raise UserError(f"{args.weights}: no anchors in the model's metadata")
        return json.loads(meta["anchors"]), args.weights
    from models.checkpoint import load_checkpoint

    return load_checkpoint(args.weights)["anchors"], args.weights


def run_anchors(args: argparse.Namespace) -> int:
    import numpy as np

    from models.anchors import anchors_per_level, evaluate_anchors, kmeans_anchors
    from models.data.formats import load_data_yaml
    from models.data.labels import all_boxes_wh

    spec = load_data_yaml(args.data)
    wh = all_boxes_wh(spec.train, args.imgsz, spec.nc)
    current_levels, source = _current_anchors(args)
    current = np.array(current_levels, dtype=np.float64).reshape(-1, 2)
    before = evaluate_anchors(wh, current, args.anchor_t)
    try:
        fitted = kmeans_anchors(
            wh, n=len(current), anchor_t=args.anchor_t, generations=args.generations, seed=args.seed
        )
    except ValueError as exc:
        raise UserError(f"{args.data}: {exc}") from None
    report = {
        "boxes": int(len(wh)),
        "imgsz": args.imgsz,
        "anchor_t": args.anchor_t,
        "current_from": source,
        "default": before.as_dict(),
        "fitted": fitted.as_dict(),
        "fitted_per_level": anchors_per_level(fitted.anchors),
        "would_adopt": fitted.bpr > before.bpr
        or (fitted.bpr == before.bpr and fitted.fitness > before.fitness),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(anchor_table(report))
    return 0


def anchor_table(report: dict[str, Any]) -> str:
    """The anchor report as a few readable lines: one row per anchor set, the anchors per level."""
    lines = [f"{report['boxes']} training boxes at {report['imgsz']} px, "
             f"anchor threshold {report['anchor_t']}",
             f"{'anchors':<10}{'BPR':>8}{'above thr':>11}{'fitness':>9}  anchors (w,h px; P3 | P4 | P5)"]
    for label, key in (("current", "default"), ("fitted", "fitted")):
        row = report[key]
        pairs = [f"{w:g},{h:g}" for w, h in row["anchors"]]
        per = max(len(pairs) // 3, 1)
        levels = " | ".join(" ".join(pairs[i:i + per]) for i in range(0, len(pairs), per))
        lines.append(f"{label:<10}{row['bpr']:>8.4f}{row['anchors_above_threshold']:>11.3f}"
                     f"{row['fitness']:>9.4f}  {levels}")
    verdict = "would be adopted" if report["would_adopt"] else "would not be adopted"
    lines.append(f"current: {report['current_from']}; the fitted anchors {verdict} by train --anchors "
                 "auto|fit (--json for all figures)")
    return "\n".join(lines)
