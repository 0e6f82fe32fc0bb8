"""The table of the pretraining measurement (scripts/pretrain_measure.sh): reads each cell's
``eval.json`` (``evaluate --json`` of its last epoch on val.txt) under the output folder, writes one
row per cell to a CSV and prints the Markdown table of the model card (mean of the seeds and the
seeds' values per cell, and pretrained minus scratch; ``train_loss`` is box + obj + cls
training loss of the last epoch) and the wall times. Run from the repository root:

    python scripts/pretrain_table.py runs/ssl-cpu [--csv docs/ablation/pretrain-cpu.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from statistics import mean

CELL = re.compile(r"^(scratch|pretrained)-(\d+)-s(\d+)$")
METRICS = ("map50", "map50_95", "crazing_ap50", "train_loss")


def wall_seconds(out: Path) -> dict[str, int]:
    """Each step's wall time from the script's ``times.txt`` (``NAME SECONDS s`` lines)."""
    times = out / "times.txt"
    lines = times.read_text().splitlines() if times.is_file() else []
    return {parts[0]: int(parts[1]) for parts in (line.split() for line in lines) if len(parts) == 3}


def last_train_loss(run: Path) -> float:
    """box + obj + cls training loss of the run's last epoch (its ``results.csv``)."""
    with (run / "results.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return sum(float(last[k]) for k in ("train_box", "train_obj", "train_cls"))


def cell_rows(out: Path) -> list[dict[str, object]]:
    seconds = wall_seconds(out)
    rows: list[dict[str, object]] = []
    for result in sorted(out.glob("*/eval.json")):
        match = CELL.match(result.parent.name)
        if not match:
            continue
        metrics = json.loads(result.read_text())
        crazing = metrics.get("per_class", {}).get("crazing", {})
        rows.append({"arm": match[1], "labels_pct": int(match[2]), "seed": int(match[3]),
                     "map50": round(metrics["map50"], 4), "map50_95": round(metrics["map50_95"], 4),
                     "crazing_ap50": round(crazing.get("map50", float("nan")), 4),
                     "train_loss": round(last_train_loss(result.parent), 5),
                     "wall_seconds": seconds.get(result.parent.name, "")})
    rows.sort(key=lambda r: (-int(r["labels_pct"]), str(r["arm"]) != "scratch", int(r["seed"])))
    return rows


def cell_text(values: list[float]) -> str:
    if not values:
        return "not run"
    seeds = " / ".join(f"{v:.4f}" for v in values)
    return f"{mean(values):.4f} ({seeds})"


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| labels | metric | from scratch | pretrained | pretrained - scratch |",
             "|---|---|---|---|---|"]
    for pct in sorted({int(r["labels_pct"]) for r in rows}, reverse=True):
        for metric in METRICS:
            arms = {arm: [float(r[metric]) for r in rows if r["arm"] == arm and r["labels_pct"] == pct]
                    for arm in ("scratch", "pretrained")}
            both = arms["scratch"] and arms["pretrained"]
            delta = f"{mean(arms['pretrained']) - mean(arms['scratch']):+.4f}" if both else "-"
            lines.append(f"| {pct} % | {metric} | {cell_text(arms['scratch'])} | "
                         f"{cell_text(arms['pretrained'])} | {delta} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the output folder of scripts/pretrain_measure.sh")
    parser.add_argument("--csv", type=Path, default=None, help="also write one row per cell here")
    args = parser.parse_args()
    rows = cell_rows(args.out)
    if not rows:
        print(f"{args.out}: no */eval.json of a cell yet", file=sys.stderr)
        return 1
    pretrain_seconds = wall_seconds(args.out).get("pretrain")
    if pretrain_seconds is not None:
        print(f"pretraining: {pretrain_seconds} s wall", file=sys.stderr)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
