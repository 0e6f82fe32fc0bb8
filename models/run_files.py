"""The files of a training run's folder: ``hyp.yaml``, ``args.yaml`` and ``anchors.json`` written at the
start; per epoch a row of ``results.csv``, ``weights/last.pt`` and ``schedule.json`` (the schedule the run
goes by); ``weights/best.pt`` and ``best_metrics.json`` whenever the fitness improves."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from models.checkpoint import save_checkpoint

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


def next_run_dir(project: str, name: str, exist_ok: bool) -> Path:
    base = Path(project) / name
    if exist_ok or not base.exists():
        return base
    for i in range(2, 10_000):
        candidate = Path(project) / f"{name}{i}"
        if not candidate.exists():
            return candidate
    raise RuntimeError("too many runs")


def public_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics worth keeping in checkpoints and JSON (no private entries, no PR curves)."""
    return {k: v for k, v in metrics.items() if not k.startswith("_") and k not in ("pr_curves",)}


class RunFiles:
    """Writes the files of one run folder (see the module's description)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.weights = run_dir / "weights"
        self.weights.mkdir(parents=True, exist_ok=True)
        self.results_csv = run_dir / "results.csv"
        self.last = self.weights / "last.pt"
        self.best = self.weights / "best.pt"

    def record_start(self, hyp: dict[str, Any], args: dict[str, Any], anchor_report: dict[str, Any]) -> None:
        (self.run_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
        (self.run_dir / "args.yaml").write_text(yaml.safe_dump(args, sort_keys=False))
        (self.run_dir / "anchors.json").write_text(json.dumps(anchor_report, indent=2))

    def start_results(self, epochs_done: int = 0) -> None:
        """The header of results.csv, unless a resumed run already has one; then the rows of epochs after
        the ``epochs_done`` its checkpoint holds go (a run stopped between writing an epoch's row and its
        checkpoint trains that epoch again)."""
        if not self.results_csv.exists():
            with self.results_csv.open("w", newline="") as fh:
                csv.writer(fh).writerow(RESULT_COLUMNS)
            return
        with self.results_csv.open(newline="") as fh:
            rows = list(csv.reader(fh))
        kept = [rows[0], *(r for r in rows[1:] if r and int(r[0]) <= epochs_done)]
        if len(kept) != len(rows):
            with self.results_csv.open("w", newline="") as fh:
                csv.writer(fh).writerows(kept)

    def append_result(self, row: list[Any]) -> None:
        with self.results_csv.open("a", newline="") as fh:
            csv.writer(fh).writerow(row)

    def save_last(self, payload: dict[str, Any]) -> None:
        save_checkpoint(self.last, payload)

    def save_best(self, payload: dict[str, Any], ema_state: dict[str, torch.Tensor]) -> None:
        """best.pt: the checkpoint without optimizer and raw weights, its EMA weights in half precision."""
        best = {k: v for k, v in payload.items() if k not in ("optimizer", "model_state")}
        best["model_state"] = None
        best["ema_state"] = {k: v.half() if v.dtype.is_floating_point else v for k, v in ema_state.items()}
        save_checkpoint(self.best, best)
        metrics = {"epoch": payload["epoch"] + 1, **payload["metrics"]}
        (self.run_dir / "best_metrics.json").write_text(json.dumps(metrics, indent=2))

    def write_schedule(self, schedule: dict[str, Any]) -> None:
        (self.run_dir / "schedule.json").write_text(json.dumps(schedule, indent=2))
