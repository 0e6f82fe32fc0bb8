"""Training loop: SGD (Nesterov) with warm-up and cosine/linear LR, weight-decay groups, EMA,
gradient accumulation to a nominal batch of 64, AMP on CUDA, resumable checkpoints."""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from models.anchors import AnchorReport, anchors_per_level, evaluate_anchors, fit_anchors
from models.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from models.data.dataset import create_dataloader
from models.data.formats import load_data_yaml
from models.data.labels import all_boxes_wh
from models.evaluate import TorchDetector, evaluate, fitness
from models.loss import YoloLoss
from models.yolo import CONFIG_DIR, DetectionModel, load_config

log = logging.getLogger("models.train")
RESULT_COLUMNS = [
    "epoch",
    "train_box",
    "train_obj",
    "train_cls",
    "map50",
    "map50_95",
    "precision",
    "recall",
    "lr",
    "seconds",
]


@dataclass
class TrainOptions:
    data: str
    cfg: str = "yolov5s-cbam.yaml"
    hyp: str = str(CONFIG_DIR / "hyp.yaml")
    hyp_overrides: dict[str, Any] = field(default_factory=dict)
    imgsz: int = 256
    epochs: int = 100
    batch: int = 16
    device: str = "cpu"
    workers: int = 2
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: str | None = None  # a run folder or its last.pt
    weights: str | None = None  # fine-tune from an earlier checkpoint
    anchors: str = "auto"  # default | auto (fit when BPR < 0.98) | fit (always try)
    seed: int = 0
    cache: bool = False
    val_interval: int = 1
    plots: bool = True
    time_limit_min: float | None = None  # shorten the schedule so this invocation ends within it


class ScheduleBudget:
    """Fits the remaining schedule into a wall-clock budget (``--time``).

    After each epoch's training pass it predicts how many more epochs fit: the median duration of
    the epochs timed so far (the first one, with worker start-up and cuDNN tuning, is left out, and
    nothing is predicted before three others are timed), keeping back the last validation's duration
    for the final validation. The schedule only ever shrinks; the cosine LR and the close-mosaic
    point follow the new length."""

    def __init__(self, limit_min: float, started: float):
        self.limit_s = limit_min * 60.0
        self.started = started
        self.epoch_seconds: list[float] = []
        self.last_validation_s = 0.0
        self.min_timed = 3  # epochs timed after the first before the schedule is refitted

    def record(self, epoch_s: float, validation_s: float | None) -> None:
        self.epoch_seconds.append(epoch_s)
        if validation_s is not None:
            self.last_validation_s = validation_s

    def fitted_epochs(self, epoch: int, epochs: int, now: float, train_pass_s: float) -> int:
        """The schedule length that ends in time, given that ``epoch`` (0-based) just finished training."""
        left = self.limit_s - (now - self.started)
        timed = self.epoch_seconds[1:]  # the first epoch (start-up, cuDNN tuning) says little
        if len(timed) < self.min_timed:
            # too early to predict: shorten only when not even one more epoch fits
            return epoch + 1 if left < 2 * train_pass_s else epochs
        per_epoch = float(np.median(timed))
        reserve = self.last_validation_s or train_pass_s  # the final validation
        more = max(int((left - reserve) // max(per_epoch, 1e-6)), 0)
        return min(epochs, epoch + 1 + more)


def load_hyp(path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    with open(path) as fh:
        hyp = yaml.safe_load(fh)
    for key, value in overrides.items():
        if key not in hyp:
            from app.errors import UserError

            raise UserError(f"{path}: unknown hyperparameter {key!r} in override")
        hyp[key] = value
    return hyp


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ModelEMA:
    """Exponential moving average of the weights, decay ramping up as ``d * (1 - exp(-updates / 2000))``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, updates: int = 0):
        self.ema = copy.deepcopy(model).eval()
        self.updates = updates
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """YOLOv5's three groups: BatchNorm weights (no decay), other weights (decay), biases (no decay)."""
    bn, weights, biases = [], [], []
    for module in model.modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            biases.append(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            bn.append(module.weight)
        elif isinstance(getattr(module, "weight", None), nn.Parameter):
            weights.append(module.weight)
    return [
        {"params": bn, "weight_decay": 0.0},
        {"params": weights, "weight_decay": weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, hyp: dict[str, Any], weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (default, as YOLOv5) or AdamW (``optimizer: AdamW`` in the hyp file)."""
    groups = param_groups(model, weight_decay)
    name = str(hyp.get("optimizer", "SGD"))
    if name == "SGD":
        return torch.optim.SGD(groups, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=hyp["lr0"], betas=(hyp["momentum"], 0.999))
    from app.errors import UserError

    raise UserError(f"hyperparameter optimizer: {name!r} is not SGD or AdamW")


def lr_lambda(hyp: dict[str, Any], epochs: int):
    lrf = hyp["lrf"]
    if hyp.get("lr_schedule", "cosine") == "linear":
        return lambda e: (1 - e / epochs) * (1.0 - lrf) + lrf
    return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1


def next_run_dir(project: str, name: str, exist_ok: bool) -> Path:
    base = Path(project) / name
    if exist_ok or not base.exists():
        return base
    for i in range(2, 10_000):
        candidate = Path(project) / f"{name}{i}"
        if not candidate.exists():
            return candidate
    raise RuntimeError("too many runs")


def choose_anchors(
    model_cfg: dict, train_paths: list[Path], nc: int, imgsz: int, hyp: dict, mode: str, seed: int
) -> tuple[list[list[float]], dict[str, Any]]:
    current = np.array(model_cfg["anchors"], dtype=np.float64).reshape(-1, 2)
    wh = all_boxes_wh(train_paths, imgsz, nc)
    if mode == "default":
        before = evaluate_anchors(wh, current, hyp["anchor_t"])
        return model_cfg["anchors"], {"mode": mode, "default": before.as_dict(), "adopted": False}
    before, chosen, adopted = fit_anchors(wh, current, hyp["anchor_t"], force=(mode == "fit"), seed=seed)
    report: dict[str, Any] = {"mode": mode, "default": before.as_dict(), "adopted": adopted}
    if adopted:
        report["fitted"] = chosen.as_dict()
    anchors = anchors_per_level(chosen.anchors) if adopted else model_cfg["anchors"]
    _log_anchors(before, chosen if adopted else None)
    return anchors, report


def _log_anchors(before: AnchorReport, after: AnchorReport | None) -> None:
    log.info("anchors: default BPR %.4f, %.2f anchors above threshold", before.bpr, before.anchors_above)
    if after is not None:
        log.info(
            "anchors: fitted BPR %.4f, %.2f anchors above threshold: %s",
            after.bpr,
            after.anchors_above,
            np.round(after.anchors, 1).tolist(),
        )


def _load_compatible(model: nn.Module, source: dict[str, torch.Tensor], origin: str) -> None:
    """Copy every tensor whose name and shape match (a new class count re-initialises the head)."""
    own = model.state_dict()
    compatible = {k: v.float() for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(compatible, strict=False)
    log.info("fine-tuning from %s: %d/%d tensors transferred", origin, len(compatible), len(own))


def _transfer(source: nn.Module, target: DetectionModel, origin: str) -> DetectionModel:
    _load_compatible(target, source.state_dict(), origin)
    return target


def train(opts: TrainOptions) -> Path:
    """Train and return the run folder (weights/last.pt, weights/best.pt, results.csv, plots)."""
    ckpt: dict[str, Any] | None = None
    if opts.resume:
        resume_path = Path(opts.resume)
        resume_path = resume_path / "weights" / "last.pt" if resume_path.is_dir() else resume_path
        ckpt = load_checkpoint(resume_path)
        saved = TrainOptions(**ckpt["train_args"])
        saved.resume, saved.device, saved.workers = str(resume_path), opts.device, opts.workers
        opts = saved
        run_dir = resume_path.parent.parent
    else:
        run_dir = next_run_dir(opts.project, opts.name, opts.exist_ok)
    weights_dir = run_dir / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seed_everything(opts.seed)
    device = torch.device(opts.device if opts.device != "cuda" or torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    budget = ScheduleBudget(opts.time_limit_min, started) if opts.time_limit_min else None
    spec = load_data_yaml(opts.data)
    hyp = load_hyp(opts.hyp, opts.hyp_overrides) if ckpt is None else ckpt["hyp"]

    # model
    if ckpt is not None:
        model = build_from_checkpoint(ckpt)
        model.load_state_dict(ckpt["model_state"])
        anchor_report = ckpt.get("anchor_report", {})
    elif opts.weights and Path(opts.weights).suffix.lower() == ".onnx":
        from models.onnx_weights import load_onnx_for_training

        model, init = load_onnx_for_training(opts.weights, spec.train, opts.imgsz)
        if len(init["names"]) != spec.nc:
            model = _transfer(model, DetectionModel(init["model_cfg"], nc=spec.nc, anchors=init["anchors"]),
                              opts.weights)
        anchor_report = init["anchor_report"]
    elif opts.weights:
        init = load_checkpoint(opts.weights)
        model_cfg = init["model_cfg"]
        model = DetectionModel(model_cfg, nc=spec.nc, anchors=init["anchors"])
        source = init.get("ema_state") or init["model_state"]
        _load_compatible(model, source, opts.weights)
        anchor_report = init.get("anchor_report", {})
    else:
        model_cfg = load_config(opts.cfg)
        anchors, anchor_report = choose_anchors(
            model_cfg, spec.train, spec.nc, opts.imgsz, hyp, opts.anchors, opts.seed
        )
        model = DetectionModel(model_cfg, nc=spec.nc, anchors=anchors)
    model.names = list(spec.names)
    model.to(device)

    nbs = hyp["nbs"]
    accumulate = max(round(nbs / opts.batch), 1)
    weight_decay = hyp["weight_decay"] * opts.batch * accumulate / nbs
    optimizer = make_optimizer(model, hyp, weight_decay)
    lf = lr_lambda(hyp, opts.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    ema = ModelEMA(model, hyp.get("ema_decay", 0.9999))
    start_epoch, best_fitness = 0, -1.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        ema.ema.load_state_dict(ckpt["ema_state"])
        ema.updates = ckpt["ema_updates"]
        start_epoch, best_fitness = ckpt["epoch"] + 1, ckpt["best_fitness"]
        scheduler.last_epoch = start_epoch - 1
        log.info("resuming %s from epoch %d", run_dir, start_epoch)
        if start_epoch >= opts.epochs:
            log.info("run already finished %d epochs", opts.epochs)
            return run_dir
    else:
        (run_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
        (run_dir / "args.yaml").write_text(yaml.safe_dump(asdict(opts), sort_keys=False))
        (run_dir / "anchors.json").write_text(json.dumps(anchor_report, indent=2))

    close_at = opts.epochs - int(hyp.get("close_mosaic", 0))

    def make_loader(augment_mosaic: bool):
        loader, dataset = create_dataloader(
            spec.train,
            spec.nc,
            opts.imgsz,
            opts.batch,
            hyp,
            augment=True,
            workers=opts.workers,
            shuffle=True,
            cache=opts.cache,
            seed=opts.seed,
        )
        if not augment_mosaic:
            dataset.close_mosaic()
        return loader

    loader = make_loader(start_epoch < close_at)
    nb = len(loader)
    warmup_iters = max(round(hyp["warmup_epochs"] * nb), int(hyp.get("warmup_min_iters", 100)))
    compute_loss = YoloLoss(model, hyp, opts.imgsz)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    results_csv = run_dir / "results.csv"
    if not results_csv.exists():
        with results_csv.open("w", newline="") as fh:
            csv.writer(fh).writerow(RESULT_COLUMNS)
    last_opt_step = -1
    metrics: dict[str, Any] = {"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0}
    from tqdm import tqdm

    epoch = start_epoch - 1
    while epoch + 1 < opts.epochs:
        epoch += 1
        t_epoch = time.perf_counter()
        if epoch >= close_at and loader.dataset.mosaic_enabled:
            log.info("epoch %d: closing mosaic/cutmix for the last %d epochs", epoch, opts.epochs - close_at)
            loader = make_loader(False)
        model.train()
        mean_loss = torch.zeros(3, device=device)
        optimizer.zero_grad()
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="batch", leave=False, mininterval=2.0
        )
        for i, (imgs, targets, _paths, _shapes) in enumerate(bar):
            ni = i + nb * epoch
            imgs = imgs.to(device, non_blocking=True).float() / 255
            if ni <= warmup_iters:
                xi = [0, warmup_iters]
                accumulate = max(1, int(np.interp(ni, xi, [1, nbs / opts.batch]).round()))
                for j, group in enumerate(optimizer.param_groups):
                    start_lr = hyp["warmup_bias_lr"] if j == 2 else 0.0
                    group["lr"] = np.interp(ni, xi, [start_lr, group["initial_lr"] * lf(epoch)])
                    momentum = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
                    if "betas" in group:
                        group["betas"] = (momentum, group["betas"][1])
                    else:
                        group["momentum"] = momentum
            with torch.autocast(device.type, enabled=cuda):
                preds = model(imgs)
                loss, items = compute_loss(preds, targets.to(device))
            scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                ema.update(model)
                last_opt_step = ni
            mean_loss = (mean_loss * i + items) / (i + 1)
            bar.set_postfix(box=f"{mean_loss[0]:.4f}", obj=f"{mean_loss[1]:.4f}", cls=f"{mean_loss[2]:.4f}")
        bar.close()
        scheduler.step()
        if budget is not None:
            now = time.perf_counter()
            fitted = budget.fitted_epochs(epoch, opts.epochs, now, now - t_epoch)
            if fitted < opts.epochs:
                log.info("--time %.1f min: schedule shortened from %d to %d epochs",
                         opts.time_limit_min, opts.epochs, fitted)
                opts.epochs = fitted
                lf = lr_lambda(hyp, opts.epochs)
                scheduler.lr_lambdas = [lf] * len(optimizer.param_groups)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * lf(scheduler.last_epoch)
                close_at = opts.epochs - int(hyp.get("close_mosaic", 0))
        final = epoch + 1 == opts.epochs
        validated = final or (epoch + 1) % max(opts.val_interval, 1) == 0
        validation_s = None
        if validated:
            t_val = time.perf_counter()
            detector = TorchDetector(ema.ema, spec.names, opts.imgsz, device, half=cuda)
            metrics = evaluate(detector, spec.val, spec.nc, batch_size=32)
            ema.ema.float()
            validation_s = time.perf_counter() - t_val
        fit = fitness(metrics)
        seconds = time.perf_counter() - t_epoch
        if budget is not None:
            budget.record(seconds, validation_s)
        scores = [round(metrics[k], 5) for k in ("map50", "map50_95", "precision", "recall")]
        row = [
            epoch + 1,
            *[round(float(x), 5) for x in mean_loss.tolist()],
            *(scores if validated else ["", "", "", ""]),  # blank: not validated this epoch
            round(optimizer.param_groups[1]["lr"], 6),
            round(seconds, 2),
        ]
        with results_csv.open("a", newline="") as fh:
            csv.writer(fh).writerow(row)
        log.info(
            "epoch %d/%d  loss box %.4f obj %.4f cls %.4f  mAP50 %.4f mAP50-95 %.4f  %.1fs",
            epoch + 1,
            opts.epochs,
            *mean_loss.tolist(),
            metrics["map50"],
            metrics["map50_95"],
            seconds,
        )
        payload = {
            "epoch": epoch,
            "best_fitness": max(best_fitness, fit),
            "model_cfg": model.yaml,
            "names": list(spec.names),
            "imgsz": opts.imgsz,
            "anchors": model.anchors_pixels(),
            "anchor_report": anchor_report,
            "hyp": hyp,
            "train_args": asdict(opts),
            "model_state": model.state_dict(),
            "ema_state": ema.ema.state_dict(),
            "ema_updates": ema.updates,
            "optimizer": optimizer.state_dict(),
            "metrics": _public_metrics(metrics),
            "version": f"{run_dir.name}-e{epoch + 1}",
            "data": str(spec.yaml_path),
        }
        save_checkpoint(weights_dir / "last.pt", payload)
        if fit > best_fitness:
            best_fitness = fit
            best = {k: v for k, v in payload.items() if k not in ("optimizer", "model_state")}
            best["model_state"] = None
            best["ema_state"] = {
                k: v.half() if v.dtype.is_floating_point else v for k, v in ema.ema.state_dict().items()
            }
            save_checkpoint(weights_dir / "best.pt", best)
            (run_dir / "best_metrics.json").write_text(
                json.dumps({"epoch": epoch + 1, **_public_metrics(metrics)}, indent=2)
            )
    if opts.plots:
        from models.plots import plot_run

        plot_run(run_dir, weights_dir / "best.pt", spec, device)
    return run_dir


def _public_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("_") and k not in ("pr_curves",)}
