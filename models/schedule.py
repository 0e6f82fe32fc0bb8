"""A training run's schedule (its length, the LR curve over it, the warm-up, the close-mosaic point, the
nominal batch) and the wall-clock budget (``--time``) that fits its length to the time given.

Everything that follows from the run's length scales with the number of epochs it actually runs:

- the cosine (or linear) LR goes from 1 to ``lrf`` over ``epochs``;
- the warm-up lasts ``warmup_epochs`` (at least ``warmup_min_iters`` iterations) but never more than
  ``warmup_max_fraction`` of the run's iterations;
- mosaic and cutmix close for the last ``close_mosaic`` epochs, but for no more than
  ``close_mosaic_fraction`` of the run (at least one epoch when ``close_mosaic`` > 0);
- gradients accumulate up to the nominal batch ``nbs``, but never so many that the run makes fewer than
  ``min_optimizer_steps`` optimizer steps in all."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger("models.train")  # part of the training log


@dataclass
class Schedule:
    """The epochs a run trains for and what follows from their number.

    ``planned_epochs`` is the length this invocation started with (``--epochs``, or the resumed run's);
    ``epochs`` the length it actually runs, shorter only when a time budget shortened it. The LR factor
    and the close-mosaic point always follow ``epochs``."""

    planned_epochs: int
    epochs: int
    close_mosaic: int  # at most the last this many epochs train without mosaic/cutmix (hyp close_mosaic)
    lr_schedule: str  # cosine | linear
    lrf: float  # final LR as a fraction of lr0
    time_limit_min: float | None = None
    shortened_after_epoch: int | None = None  # 1-based epoch after which the budget last refitted it
    close_mosaic_fraction: float = 0.1  # ... and for no more than this fraction of the run

    @classmethod
    def from_hyp(cls, hyp: dict[str, Any], epochs: int, time_limit_min: float | None) -> Schedule:
        return cls(planned_epochs=epochs, epochs=epochs, close_mosaic=int(hyp.get("close_mosaic", 0)),
                   lr_schedule=str(hyp.get("lr_schedule", "cosine")), lrf=float(hyp["lrf"]),
                   time_limit_min=time_limit_min,
                   close_mosaic_fraction=float(hyp.get("close_mosaic_fraction", 0.1)))

    @property
    def closed_epochs(self) -> int:
        """How many final epochs train without mosaic and cutmix."""
        if self.close_mosaic <= 0:
            return 0
        return max(1, min(self.close_mosaic, math.ceil(self.epochs * self.close_mosaic_fraction)))

    @property
    def close_at(self) -> int:
        """The 0-based epoch from which mosaic and cutmix are off."""
        return self.epochs - self.closed_epochs

    def lr_factor(self, epoch: float) -> float:
        """The LR multiplier at ``epoch`` (0-based, fractional during warm-up): 1 down to ``lrf``."""
        if self.lr_schedule == "linear":
            return (1 - epoch / self.epochs) * (1.0 - self.lrf) + self.lrf
        return ((1 - math.cos(epoch * math.pi / self.epochs)) / 2) * (self.lrf - 1) + 1

    def refit(self, epochs: int, after_epoch: int) -> None:
        """End after ``epochs`` epochs instead (fewer, or more up to the planned length); ``after_epoch``
        (0-based) is the epoch just trained."""
        self.epochs = min(epochs, self.planned_epochs)
        self.shortened_after_epoch = after_epoch + 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "close_mosaic_from_epoch": self.close_at + 1,
                "closed_mosaic_epochs": self.closed_epochs}


def warmup_iterations(hyp: dict[str, Any], batches_per_epoch: int, epochs: int) -> int:
    """Warm-up iterations: ``warmup_epochs`` of them, at least ``warmup_min_iters``, at most
    ``warmup_max_fraction`` (default 0.2) of the run's ``epochs * batches_per_epoch`` iterations."""
    wanted = max(round(float(hyp["warmup_epochs"]) * batches_per_epoch),
                 int(hyp.get("warmup_min_iters", 100)))
    ceiling = math.floor(float(hyp.get("warmup_max_fraction", 0.2)) * epochs * batches_per_epoch)
    return max(min(wanted, ceiling), 0)


def accumulation_steps(nbs: int, batch: int, batches_per_epoch: int, epochs: int, min_steps: int) -> int:
    """Batches whose gradients make one optimizer step: ``nbs / batch`` (the nominal batch), fewer when the
    run would otherwise make under ``min_steps`` optimizer steps in all (a small data set, a short run)."""
    accumulate = max(round(nbs / batch), 1)
    while accumulate > 1 and epochs * batches_per_epoch / accumulate < min_steps:
        accumulate -= 1
    return accumulate


def epoch_pace(epoch_seconds: list[float]) -> float | None:
    """The predicted duration of one more epoch from the epochs timed so far in this invocation: the
    median of those after the first (the first also starts the loader workers and reads every image
    cold), the first alone until a second is timed; None before any."""
    timed = epoch_seconds[1:] or epoch_seconds[:1]
    return float(np.median(timed)) if timed else None


class ScheduleBudget:
    """Fits the schedule's length into a wall-clock budget (``--time``).

    After each epoch's training pass, from the first one on, it predicts how many more epochs fit and
    refits the schedule to that: the cosine LR, the warm-up and the close-mosaic point follow the new
    length at once, so even the first estimate gives a complete schedule rather than one cut off at the
    end. The duration of an epoch is the median of the epochs timed after the first (the first one also
    starts the loader workers and reads every image cold); until a second epoch is timed it is the
    first one's. The last validation's duration (else one training pass) is kept back for the final
    validation. The schedule never grows past the planned ``--epochs``, and never grows once its
    close-mosaic phase has begun."""

    def __init__(self, limit_min: float, started: float) -> None:
        self.limit_min = limit_min
        self.limit_s = limit_min * 60.0
        self.started = started
        self.epoch_seconds: list[float] = []
        self.last_validation_s = 0.0

    def record(self, epoch_s: float, validation_s: float | None) -> None:
        self.epoch_seconds.append(epoch_s)
        if validation_s is not None:
            self.last_validation_s = validation_s

    def per_epoch_s(self, train_pass_s: float) -> float:
        """The predicted duration of one more epoch."""
        pace = epoch_pace(self.epoch_seconds)
        return pace if pace is not None else train_pass_s + self.last_validation_s

    def fitted_epochs(self, epoch: int, now: float, train_pass_s: float) -> int:
        """The schedule length that ends in time, given that ``epoch`` (0-based) just finished training."""
        left = self.limit_s - (now - self.started)
        reserve = self.last_validation_s or train_pass_s  # the final validation
        more = max(int((left - reserve) // max(self.per_epoch_s(train_pass_s), 1e-6)), 0)
        return epoch + 1 + more

    def fit(self, schedule: Schedule, epoch: int, now: float, train_pass_s: float) -> bool:
        """Refit ``schedule`` to the time left; True when its length changed."""
        fitted = min(self.fitted_epochs(epoch, now, train_pass_s), schedule.planned_epochs)
        if fitted > schedule.epochs and epoch + 1 >= schedule.close_at:
            fitted = schedule.epochs  # mosaic has closed: no growing back into the mosaic phase
        if fitted == schedule.epochs:
            return False
        log.info("--time %.1f min: schedule refitted from %d to %d epochs (%.1f s per epoch predicted)",
                 self.limit_min, schedule.epochs, fitted, self.per_epoch_s(train_pass_s))
        schedule.refit(fitted, after_epoch=epoch)
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"limit_s": self.limit_s, "epoch_seconds": [round(s, 3) for s in self.epoch_seconds],
                "last_validation_s": round(self.last_validation_s, 3)}
