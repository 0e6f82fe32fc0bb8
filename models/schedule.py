"""A training run's schedule (its length, the LR curve over it, the close-mosaic point) and the
wall-clock budget (``--time``) that may shorten it."""

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
    close_mosaic: int  # the last this many epochs train without mosaic/cutmix
    lr_schedule: str  # cosine | linear
    lrf: float  # final LR as a fraction of lr0
    time_limit_min: float | None = None
    shortened_after_epoch: int | None = None  # 1-based epoch after which the budget last shortened it

    @classmethod
    def from_hyp(cls, hyp: dict[str, Any], epochs: int, time_limit_min: float | None) -> Schedule:
        return cls(planned_epochs=epochs, epochs=epochs, close_mosaic=int(hyp.get("close_mosaic", 0)),
                   lr_schedule=str(hyp.get("lr_schedule", "cosine")), lrf=float(hyp["lrf"]),
                   time_limit_min=time_limit_min)

    @property
    def close_at(self) -> int:
        """The 0-based epoch from which mosaic and cutmix are off."""
        return self.epochs - self.close_mosaic

    def lr_factor(self, epoch: float) -> float:
        """The LR multiplier at ``epoch`` (0-based, fractional during warm-up): 1 down to ``lrf``."""
        if self.lr_schedule == "linear":
            return (1 - epoch / self.epochs) * (1.0 - self.lrf) + self.lrf
        return ((1 - math.cos(epoch * math.pi / self.epochs)) / 2) * (self.lrf - 1) + 1

    def shorten(self, epochs: int, after_epoch: int) -> None:
        """End after ``epochs`` epochs instead; ``after_epoch`` (0-based) is the epoch just trained."""
        self.epochs = epochs
        self.shortened_after_epoch = after_epoch + 1

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "close_mosaic_from_epoch": self.close_at + 1}


class ScheduleBudget:
    """Fits the remaining schedule into a wall-clock budget (``--time``).

    After each epoch's training pass it predicts how many more epochs fit: the median duration of
    the epochs timed so far (the first one, with worker start-up and cuDNN tuning, is left out, and
    nothing is predicted before three others are timed), keeping back the last validation's duration
    for the final validation. The schedule only ever shrinks; the cosine LR and the close-mosaic
    point follow the new length."""

    def __init__(self, limit_min: float, started: float) -> None:
        self.limit_min = limit_min
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

    def fit(self, schedule: Schedule, epoch: int, now: float, train_pass_s: float) -> bool:
        """Shorten ``schedule`` when its rest no longer fits; True when it did."""
        fitted = self.fitted_epochs(epoch, schedule.epochs, now, train_pass_s)
        if fitted >= schedule.epochs:
            return False
        log.info("--time %.1f min: schedule shortened from %d to %d epochs",
                 self.limit_min, schedule.epochs, fitted)
        schedule.shorten(fitted, after_epoch=epoch)
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"limit_s": self.limit_s, "epoch_seconds": [round(s, 3) for s in self.epoch_seconds],
                "last_validation_s": round(self.last_validation_s, 3)}
