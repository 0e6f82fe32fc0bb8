"""Training loop: SGD (Nesterov) with warm-up and cosine/linear LR, weight-decay groups, EMA,
gradient accumulation towards a nominal batch of 64, mixed precision (float16 on CUDA, bfloat16 on a CPU
with AMX), resumable checkpoints.

:class:`Trainer` runs one training as steps: set-up (run folder, data, model, optimizer, EMA, LR
schedule, resume state), then per epoch :meth:`Trainer.train_epoch`, the time budget's refit of the
schedule, :meth:`Trainer.validate` when due and :meth:`Trainer.save`. The options it is given are never
changed; the length the run actually goes by lives in its :class:`~models.schedule.Schedule`."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from app.errors import ConfigError
from models.checkpoint import load_checkpoint
from models.data.dataset import create_dataloader
from models.data.formats import load_data_yaml
from models.device import autocast, autocast_dtype, grad_scaler, memory_format, pick_device
from models.evaluate import TorchDetector, evaluate, fitness
from models.loss import YoloLoss
from models.optim import ModelEMA, make_optimizer, set_lr_factor, warm_up
from models.progress import interactive, quarter_marks, startup_step
from models.run_files import RunFiles, next_run_dir, public_metrics
from models.schedule import Schedule, ScheduleBudget, accumulation_steps, epoch_pace, warmup_iterations
from models.start_model import starting_model
from models.yolo import CONFIG_DIR

log = logging.getLogger("models.train")

__all__ = ["ScheduleBudget", "TrainOptions", "TrainResult", "Trainer", "train"]


@dataclass(frozen=True)
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
    weights: str | None = None  # fine-tune from an earlier checkpoint or FP32 ONNX export
    backbone: str | None = None  # backbone weights from `defect-inspect pretrain`
    anchors: str = "auto"  # default | auto (fit when BPR < 0.98) | fit (always try)
    seed: int = 0
    cache: bool = False
    val_interval: int = 1
    plots: bool = True
    time_limit_min: float | None = None  # shorten the schedule so this invocation ends within it
    stop_after_min: float | None = None  # end this invocation within it, schedule kept (continue: resume)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16: the forward pass (models.device.autocast_dtype)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` leaves: the run folder, the schedule it went by, how far it got."""

    run_dir: Path
    schedule: Schedule  # the schedule the run went by (shortened by --time, if it was)
    epochs_done: int
    best_fitness: float
    stopped_early: bool = False  # ended by ``stop_after_min`` before the schedule's end: resume it


def train(opts: TrainOptions) -> Path:
    """Train and return the run folder (weights/last.pt, weights/best.pt, results.csv, plots)."""
    return Trainer(opts).fit().run_dir


def load_hyp(path: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    with open(path) as fh:
        hyp = yaml.safe_load(fh)
    for key, value in overrides.items():
        if key not in hyp:
            raise ConfigError(f"{path}: unknown hyperparameter {key!r} in override")
        hyp[key] = value
    return hyp


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_run(opts: TrainOptions) -> tuple[TrainOptions, dict[str, Any] | None, Path]:
    """The options a run goes by, the checkpoint it resumes (if any) and its folder. A resumed run goes
    by its saved options, with this invocation's device, workers, ``stop_after_min`` and precision (what
    the machine it runs on does best)."""
    if not opts.resume:
        return opts, None, next_run_dir(opts.project, opts.name, opts.exist_ok)
    resume_path = Path(opts.resume)
    resume_path = resume_path / "weights" / "last.pt" if resume_path.is_dir() else resume_path
    ckpt = load_checkpoint(resume_path)
    saved = replace(TrainOptions(**ckpt["train_args"]), resume=str(resume_path), device=opts.device,
                    workers=opts.workers, stop_after_min=opts.stop_after_min, precision=opts.precision)
    return saved, ckpt, resume_path.parent.parent


class Trainer:
    """One training run. Construction sets everything up; :meth:`fit` runs the remaining epochs."""

    loader: DataLoader
    batches: int  # per epoch
    warmup_iters: int
    compute_loss: YoloLoss
    scaler: torch.amp.GradScaler

    def __init__(self, opts: TrainOptions) -> None:
        self.opts, resumed, run_dir = resolve_run(opts)
        self.device = pick_device(self.opts.device)
        self.cuda = self.device.type == "cuda"
        self.amp_dtype = autocast_dtype(self.device, self.opts.precision)  # refused before a folder is made
        self.files = RunFiles(run_dir)
        log.info("forward pass in %s on %s", "float32" if self.amp_dtype is None
                 else f"{self.amp_dtype} mixed precision (weights, gradients and the loss in float32)",
                 self.device)
        started = self.started = time.perf_counter()
        self.invocation_epoch_s: list[float] = []  # this invocation's epochs, for ``stop_after_min``
        seed_everything(self.opts.seed)
        limit = self.opts.time_limit_min
        self.budget = ScheduleBudget(limit, started) if limit else None
        with startup_step("reading the data set description and hyperparameters"):
            self.spec = load_data_yaml(self.opts.data)
            self.hyp = load_hyp(self.opts.hyp, self.opts.hyp_overrides) if resumed is None else resumed["hyp"]
            self.schedule = Schedule.from_hyp(self.hyp, self.opts.epochs, limit)
        with startup_step(self._model_step_description(resumed)):
            self.model, self.anchor_report = starting_model(
                self.spec, self.hyp, resumed, self.opts.weights, self.opts.cfg, self.opts.imgsz,
                self.opts.anchors, self.opts.seed, self.opts.backbone,
            )
            self.memory_format = memory_format(self.device)
            self.model.to(self.device, memory_format=self.memory_format)
        self._setup_optimization()
        self.start_epoch, self.best_fitness = 0, -1.0
        self.metrics: dict[str, Any] = {"map50": 0.0, "map50_95": 0.0, "precision": 0.0, "recall": 0.0}
        if resumed is not None:
            self._restore(resumed)
        else:
            self.files.record_start(self.hyp, asdict(self.opts), self.anchor_report)
        if not self.finished:
            self._setup_data()

    @property
    def run_dir(self) -> Path:
        return self.files.run_dir

    @property
    def finished(self) -> bool:
        return self.start_epoch >= self.schedule.epochs

    def _model_step_description(self, resumed: dict[str, Any] | None) -> str:
        o = self.opts
        if resumed is not None:
            return f"restoring the model of {o.resume}"
        if o.weights and o.weights.lower().endswith(".onnx"):
            return (f"importing {o.weights} (BatchNorm statistics from up to 256 training images) "
                    f"and choosing anchors ({o.anchors})")
        if o.weights:
            return f"loading {o.weights} and choosing anchors ({o.anchors})"
        backbone = f", loading the backbone {o.backbone}" if o.backbone else ""
        return f"building {o.cfg}{backbone} and choosing anchors ({o.anchors})"

    def _setup_optimization(self) -> None:
        """Optimizer (weight decay scaled to the nominal batch), LR schedule and EMA."""
        self._fit_accumulation()
        weight_decay = self._weight_decay()
        self.optimizer = make_optimizer(self.model, self.hyp, weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.schedule.lr_factor)
        self.ema = ModelEMA(self.model, self.hyp.get("ema_decay", 0.9999))
        self.last_opt_step = -1

    def _fit_accumulation(self) -> None:
        """Batches per optimizer step for the schedule's length: towards the nominal batch, fewer when the
        run would make too few steps (see :func:`~models.schedule.accumulation_steps`)."""
        nbs, batch = self.hyp["nbs"], self.opts.batch
        batches = max(math.ceil(len(self.spec.train) / batch), 1)
        min_steps = int(self.hyp.get("min_optimizer_steps", 0))
        self.accumulate_target = accumulation_steps(nbs, batch, batches, self.schedule.epochs, min_steps)
        self.accumulate = self.accumulate_target
        nominal = max(round(nbs / batch), 1)
        log.info("batch %d, nominal batch %d: the gradients of %d batch(es) make one optimizer step, "
                 "%d steps per epoch, %d in %d epochs%s", batch, nbs, self.accumulate,
                 math.ceil(batches / self.accumulate), self.schedule.epochs * batches // self.accumulate,
                 self.schedule.epochs,
                 f" (not {nominal}: the run would make fewer than min_optimizer_steps={min_steps})"
                 if self.accumulate != nominal else "")

    def _weight_decay(self) -> float:
        return self.hyp["weight_decay"] * self.opts.batch * self.accumulate_target / self.hyp["nbs"]

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Optimizer, EMA, epoch and best fitness of the checkpoint a resumed run continues."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.ema.ema.load_state_dict(ckpt["ema_state"])
        self.ema.updates = ckpt["ema_updates"]
        self.start_epoch, self.best_fitness = ckpt["epoch"] + 1, ckpt["best_fitness"]
        self.scheduler.last_epoch = self.start_epoch  # one step per finished epoch
        limit = (f"; this invocation stops before {self.opts.stop_after_min:g} min (--stop-after)"
                 if self.opts.stop_after_min is not None else "")
        log.info("resuming %s after epoch %d of %d%s", self.run_dir, self.start_epoch, self.schedule.epochs,
                 limit)

    def _setup_data(self) -> None:
        """Training loader, warm-up length, loss, gradient scaler and the results table's header."""
        cached = " (decoding every image into RAM: --cache)" if self.opts.cache else ""
        with startup_step(f"training data loader over {len(self.spec.train)} images{cached}"):
            self.loader = self._make_loader(mosaic=self.start_epoch < self.schedule.close_at)
        self.batches = len(self.loader)
        self.warmup_iters = warmup_iterations(self.hyp, self.batches, self.schedule.epochs)
        log.info("schedule: %d epochs, %s LR, warm-up %d iterations (%.1f epochs), mosaic closes for the "
                 "last %d", self.schedule.epochs, self.schedule.lr_schedule, self.warmup_iters,
                 self.warmup_iters / self.batches, self.schedule.closed_epochs)
        self.compute_loss = YoloLoss(self.model, self.hyp, self.opts.imgsz)
        self.scaler = grad_scaler(self.amp_dtype)
        self.files.start_results(self.start_epoch)

    def _make_loader(self, mosaic: bool) -> DataLoader:
        o = self.opts
        loader, dataset = create_dataloader(self.spec.train, self.spec.nc, o.imgsz, o.batch, self.hyp,
                                            augment=True, workers=o.workers, shuffle=True, cache=o.cache,
                                            seed=o.seed)
        if not mosaic:
            dataset.close_mosaic()
        return loader

    def fit(self) -> TrainResult:
        """Train the remaining epochs of the schedule, then plot the run (``plots``)."""
        if self.finished:
            log.info("run already finished %d epochs", self.schedule.epochs)
            return self.result(self.start_epoch)
        epoch = self.start_epoch
        while epoch < self.schedule.epochs:  # the schedule may shorten on the way
            self.run_epoch(epoch)
            epoch += 1
            if epoch < self.schedule.epochs and self._stop_due():
                log.info("--stop-after %.1f min: stopping after epoch %d of %d (the next one would not end "
                         "in time); continue with: defect-inspect train --resume %s",
                         self.opts.stop_after_min, epoch, self.schedule.epochs, self.run_dir)
                return replace(self.result(epoch), stopped_early=True)
        if self.opts.plots:
            from models.plots import plot_run

            plot_run(self.run_dir, self.files.best, self.spec, self.device)
        return self.result(epoch)

    def _stop_due(self) -> bool:
        """Whether one more epoch (the median of this invocation's epochs after its first, else the first)
        would end past ``stop_after_min`` counted from the start of this invocation."""
        pace = epoch_pace(self.invocation_epoch_s)
        if self.opts.stop_after_min is None or pace is None:
            return False
        return time.perf_counter() - self.started + pace > self.opts.stop_after_min * 60.0

    def result(self, epochs_done: int) -> TrainResult:
        return TrainResult(self.run_dir, self.schedule, epochs_done, self.best_fitness)

    def run_epoch(self, epoch: int) -> None:
        """Train, refit the schedule to the time budget, validate when due, save."""
        t_epoch = time.perf_counter()
        self._close_mosaic_if_due(epoch)
        mean_loss = self.train_epoch(epoch)
        self.scheduler.step()
        if self.budget is not None:
            now = time.perf_counter()
            if self.budget.fit(self.schedule, epoch, now, now - t_epoch):
                set_lr_factor(self.optimizer, self.schedule.lr_factor(self.scheduler.last_epoch))
                self.warmup_iters = warmup_iterations(self.hyp, self.batches, self.schedule.epochs)
                self._fit_accumulation()
                self.optimizer.param_groups[1]["weight_decay"] = self._weight_decay()
        final = epoch + 1 == self.schedule.epochs
        validated = final or (epoch + 1) % max(self.opts.val_interval, 1) == 0
        validation_s = self.validate() if validated else None
        seconds = time.perf_counter() - t_epoch
        if self.budget is not None:
            self.budget.record(seconds, validation_s)
        self.invocation_epoch_s.append(seconds)
        self.save(epoch, mean_loss, validated, seconds)

    def _close_mosaic_if_due(self, epoch: int) -> None:
        if epoch >= self.schedule.close_at and self.loader.dataset.mosaic_enabled:
            log.info("epoch %d: closing mosaic/cutmix for the last %d epochs", epoch + 1,
                     self.schedule.closed_epochs)
            self.loader = self._make_loader(mosaic=False)

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over the training data; returns the mean (box, obj, cls) loss. The seconds spent
        waiting for the loader and computing are kept in :attr:`epoch_timing`."""
        from tqdm import tqdm

        if epoch == self.start_epoch:
            log.info("epoch %d starts %d loader worker(s) and reads every image from disk for the first "
                     "time%s: expect it to take longer than the ones after", epoch + 1, self.opts.workers,
                     "" if self.opts.cache else " (--cache keeps decoded images in RAM from start-up on)")
        self.loader.sampler.set_epoch(epoch)  # this epoch's order and augmentation, resumed or not
        self.model.train()
        mean_loss = torch.zeros(3, device=self.device)
        self.optimizer.zero_grad()
        desc = f"epoch {epoch + 1}/{self.schedule.epochs}"
        live = interactive()
        bar = tqdm(self.loader, desc=desc, unit="batch", leave=False, mininterval=2.0, disable=not live)
        marks = set() if live else quarter_marks(self.batches)
        data_s = compute_s = 0.0
        t_last = time.perf_counter()
        for i, (imgs, targets, _paths, _shapes) in enumerate(bar):
            t_batch = time.perf_counter()
            data_s += t_batch - t_last
            items = self._train_batch(imgs, targets, i + self.batches * epoch, epoch)
            mean_loss = (mean_loss * i + items) / (i + 1)
            t_last = time.perf_counter()
            compute_s += t_last - t_batch
            bar.set_postfix(box=f"{mean_loss[0]:.4f}", obj=f"{mean_loss[1]:.4f}", cls=f"{mean_loss[2]:.4f}")
            if i + 1 in marks:
                log.info("%s: %d%% (%d/%d batches)  loss box %.4f obj %.4f cls %.4f", desc,
                         round(100 * (i + 1) / self.batches), i + 1, self.batches, *mean_loss.tolist())
        bar.close()
        self.epoch_timing = {"data_s": data_s, "compute_s": compute_s}
        return mean_loss

    def _train_batch(self, imgs: torch.Tensor, targets: torch.Tensor, step: int, epoch: int) -> torch.Tensor:
        """Forward and backward one batch (``step`` counts batches over the run); the loss items."""
        imgs = imgs.to(self.device, non_blocking=True, memory_format=self.memory_format).float() / 255
        if step <= self.warmup_iters and self.warmup_iters > 0:
            ramp = np.interp(step, [0, self.warmup_iters], [1, self.accumulate_target])
            self.accumulate = max(1, int(ramp.round()))
            warm_up(self.optimizer, self.hyp, step, self.warmup_iters, self.schedule.lr_factor(epoch))
        with autocast(self.device, self.amp_dtype):
            preds = self.model(imgs)
        loss, items = self.compute_loss([p.float() for p in preds], targets.to(self.device))
        self.scaler.scale(loss).backward()
        if step - self.last_opt_step >= self.accumulate:
            self._optimizer_step()
            self.last_opt_step = step
        return items

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=10.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.ema.update(self.model)

    def validate(self) -> float:
        """Evaluate the EMA weights on the validation split into :attr:`metrics`; the seconds it took."""
        t_val = time.perf_counter()
        detector = TorchDetector(self.ema.ema, self.spec.names, self.opts.imgsz, self.device, half=self.cuda)
        self.metrics = evaluate(detector, self.spec.val, self.spec.nc, batch_size=32)
        self.ema.ema.float()
        return time.perf_counter() - t_val

    def save(self, epoch: int, mean_loss: torch.Tensor, validated: bool, seconds: float) -> None:
        """The epoch's results row and log line, last.pt, schedule.json, and best.pt when fitness improved."""
        fit = fitness(self.metrics)
        self.files.append_result(self._results_row(epoch, mean_loss, validated, seconds))
        timing = getattr(self, "epoch_timing", {"data_s": 0.0, "compute_s": 0.0})
        # an epoch without validation says so (the metrics held are an earlier epoch's, or none yet)
        scores = (f"mAP50 {self.metrics['map50']:.4f} mAP50-95 {self.metrics['map50_95']:.4f}" if validated
                  else f"not validated (every {self.opts.val_interval} epochs and the last)")
        log.info(
            "epoch %d/%d  loss box %.4f obj %.4f cls %.4f  %s  %.1f s "
            "(waiting for data %.1f s, training %.1f s, validation and saving the rest)%s",
            epoch + 1,
            self.schedule.epochs,
            *mean_loss.tolist(),
            scores,
            seconds,
            timing["data_s"],
            timing["compute_s"],
            self._time_left(epoch),
        )
        payload = self._checkpoint(epoch, max(self.best_fitness, fit))
        self.files.save_last(payload)
        self.files.write_schedule(payload["schedule"])
        if fit > self.best_fitness:
            self.best_fitness = fit
            self.files.save_best(payload, self.ema.ema.state_dict())

    def _time_left(self, epoch: int) -> str:
        """``; about 3 h 20 min left``: the epochs after ``epoch`` at the median pace of this invocation's
        epochs after its first (its first alone until there is a second)."""
        left, pace = self.schedule.epochs - (epoch + 1), epoch_pace(self.invocation_epoch_s)
        if left <= 0 or pace is None:
            return ""
        seconds = left * pace
        if seconds < 60:
            return f"; about {seconds:.0f} s left"
        minutes = round(seconds / 60)
        if minutes < 60:
            return f"; about {minutes} min left"
        return f"; about {minutes // 60} h {minutes % 60} min left"

    def _results_row(self, epoch: int, mean_loss: torch.Tensor, validated: bool, seconds: float) -> list[Any]:
        scores = [round(self.metrics[k], 5) for k in ("map50", "map50_95", "precision", "recall")]
        return [
            epoch + 1,
            *[round(float(x), 5) for x in mean_loss.tolist()],
            *(scores if validated else ["", "", "", ""]),  # blank: not validated this epoch
            round(self.optimizer.param_groups[1]["lr"], 6),
            round(seconds, 2),
        ]

    def schedule_report(self) -> dict[str, Any]:
        """The schedule the run goes by, with the time budget's timings when there is one."""
        return {**self.schedule.as_dict(), "budget": self.budget.as_dict() if self.budget else None}

    def _checkpoint(self, epoch: int, best_fitness: float) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "best_fitness": best_fitness,
            "model_cfg": self.model.yaml,
            "names": list(self.spec.names),
            "imgsz": self.opts.imgsz,
            "anchors": self.model.anchors_pixels(),
            "anchor_report": self.anchor_report,
            "hyp": self.hyp,
            "train_args": asdict(replace(self.opts, epochs=self.schedule.epochs)),  # a resume goes by these
            "schedule": self.schedule_report(),
            "model_state": self.model.state_dict(),
            "ema_state": self.ema.ema.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "metrics": public_metrics(self.metrics),
            "version": f"{self.run_dir.name}-e{epoch + 1}",
            "data": str(self.spec.yaml_path),
        }
