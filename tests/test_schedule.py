"""The schedule functions: what scales with the number of epochs a run actually trains, and the time
budget's refit of that number (pure functions, no training)."""

from __future__ import annotations

import pytest

from models.schedule import Schedule, ScheduleBudget, accumulation_steps, warmup_iterations

HYP = {"lrf": 0.01, "close_mosaic": 10, "warmup_epochs": 3.0, "warmup_min_iters": 100}


def test_cosine_lr_spans_the_epochs_the_run_has() -> None:
    schedule = Schedule.from_hyp(HYP, epochs=10, time_limit_min=None)
    assert schedule.lr_factor(0) == 1.0 and schedule.lr_factor(10) == pytest.approx(0.01)
    assert schedule.lr_factor(5) == pytest.approx(0.505)
    schedule.refit(4, after_epoch=0)
    assert schedule.lr_factor(2) == pytest.approx(0.505) and schedule.lr_factor(4) == pytest.approx(0.01)
    assert schedule.planned_epochs == 10 and schedule.shortened_after_epoch == 1


def test_a_refit_never_goes_past_the_planned_epochs() -> None:
    schedule = Schedule.from_hyp(HYP, epochs=10, time_limit_min=1.0)
    schedule.refit(50, after_epoch=0)
    assert schedule.epochs == 10


@pytest.mark.parametrize(("epochs", "closed"), [(300, 10), (100, 10), (30, 3), (5, 1), (1, 1)])
def test_mosaic_closes_for_a_share_of_the_run(epochs: int, closed: int) -> None:
    schedule = Schedule.from_hyp(HYP, epochs=epochs, time_limit_min=None)
    assert schedule.closed_epochs == closed and schedule.close_at == epochs - closed
    assert schedule.as_dict()["close_mosaic_from_epoch"] == epochs - closed + 1


def test_close_mosaic_zero_never_closes() -> None:
    schedule = Schedule.from_hyp({**HYP, "close_mosaic": 0}, epochs=5, time_limit_min=None)
    assert schedule.closed_epochs == 0 and schedule.close_at == 5


def test_the_close_mosaic_point_follows_a_refit() -> None:
    schedule = Schedule.from_hyp(HYP, epochs=100, time_limit_min=1.0)
    assert schedule.close_at == 90
    schedule.refit(20, after_epoch=0)
    assert schedule.close_at == 18


def test_warm_up_is_a_bounded_share_of_the_run() -> None:
    # a long run: three epochs of 500 batches
    assert warmup_iterations(HYP, batches_per_epoch=500, epochs=300) == 1500
    # tiny epochs: at least warmup_min_iters ...
    assert warmup_iterations(HYP, batches_per_epoch=10, epochs=300) == 100
    # ... but never more than a fifth of a short run
    assert warmup_iterations(HYP, batches_per_epoch=63, epochs=5) == 63
    assert warmup_iterations({**HYP, "warmup_max_fraction": 0.5}, 63, 5) == 157
    assert warmup_iterations({**HYP, "warmup_epochs": 0, "warmup_min_iters": 0}, 63, 5) == 0


def test_gradient_accumulation_adapts_to_short_runs() -> None:
    # a long run: the nominal batch of 64 as four batches of 16
    assert accumulation_steps(nbs=64, batch=16, batches_per_epoch=72, epochs=300, min_steps=1000) == 4
    # 5 epochs of 63 batches: four batches a step would make 78 steps in all; one batch a step, 315
    assert accumulation_steps(64, 16, 63, 5, 1000) == 1
    assert accumulation_steps(64, 16, 63, 40, 1000) == 2  # 1,260 steps
    assert accumulation_steps(64, 64, 3, 10, 1000) == 1
    assert accumulation_steps(64, 16, 63, 5, 0) == 4  # 0: always the nominal batch


def test_the_budget_predicts_from_the_first_epoch() -> None:
    budget = ScheduleBudget(limit_min=1.0, started=0.0)  # 60 s
    # after the first training pass (10 s, done at 12 s) the schedule is fitted at once:
    # (60 - 12 - 10 kept for the final validation) // 10 = 3 more epochs
    assert budget.fitted_epochs(0, now=12.0, train_pass_s=10.0) == 4
    budget.record(12.0, validation_s=2.0)
    # the first epoch (12 s, validation included) stands for the next until a second one is timed
    assert budget.fitted_epochs(1, now=22.0, train_pass_s=8.0) == 2 + (60 - 22 - 2) // 12
    budget.record(6.0, validation_s=1.0)
    budget.record(5.0, validation_s=1.0)
    # later epochs go by the median of those after the first: (60 - 30 - 1) // 5.5 = 5
    assert budget.per_epoch_s(5.0) == 5.5
    assert budget.fitted_epochs(3, now=30.0, train_pass_s=5.0) == 4 + 5
    assert budget.fitted_epochs(3, now=70.0, train_pass_s=5.0) == 4  # over time: this epoch is last


def test_the_budget_refits_both_ways_until_mosaic_closes() -> None:
    schedule = Schedule.from_hyp(HYP, epochs=300, time_limit_min=1.0)
    budget = ScheduleBudget(limit_min=1.0, started=0.0)
    assert budget.fit(schedule, 0, now=12.0, train_pass_s=10.0) and schedule.epochs == 4
    budget.record(12.0, validation_s=1.0)
    budget.record(3.0, validation_s=1.0)
    # faster epochs than the first predicted: the schedule grows back (mosaic still open)
    assert budget.fit(schedule, 1, now=15.0, train_pass_s=2.0) and schedule.epochs == 2 + (60 - 15 - 1) // 3
    grown = schedule.epochs
    assert schedule.close_at > 2
    # once the close-mosaic phase has begun it only shrinks
    budget.record(3.0, validation_s=1.0)
    at = schedule.close_at
    assert not budget.fit(schedule, at, now=16.0, train_pass_s=0.1) and schedule.epochs == grown
    assert budget.fit(schedule, at, now=59.0, train_pass_s=0.1) and schedule.epochs == at + 1
