"""Training plots with matplotlib: loss and mAP curves, per-class PR curves, confusion matrix,
and a grid of validation images with predicted (red) and true (green) boxes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.data.formats import DataSpec  # noqa: E402


def plot_results(results_csv: Path, out: Path) -> None:
    with results_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4))
    for ax, key in zip(axes, ["train_box", "train_obj", "train_cls", "map50", "map50_95"], strict=True):
        points = [(e, float(r[key])) for e, r in zip(epochs, rows, strict=True) if r[key] != ""]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_pr_curves(pr_curves: dict[str, list[float]], per_class: dict[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    recall = np.linspace(0, 1, 101)
    for name, precision in pr_curves.items():
        ax.plot(recall, precision, label=f"{name} AP50 {per_class[name]['map50']:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("precision-recall at IoU 0.5")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_operating_points(per_class: list, names: list[str], record: dict[str, Any], title: str,
                          out: Path) -> None:
    """Left: each class's PR curve of the service's boxes (``models.operating_points``) with its chosen
    point; right: F1 against the confidence threshold, the chosen threshold marked."""
    from models.operating_points import pr_curve

    fig, (ax_pr, ax_f1) = plt.subplots(1, 2, figsize=(13, 5.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, boxes) in enumerate(zip(names, per_class, strict=True)):
        if not len(boxes.confidence):
            continue
        colour = colours[k % len(colours)]
        curve = pr_curve(boxes)
        point = record["classes"].get(name)
        label = name if point is None else (
            f"{name}: conf {point['threshold']:.3f}, P {point['precision']:.2f} R {point['recall']:.2f}")
        ax_pr.plot(curve.recall, curve.precision, color=colour, lw=1.2, label=label)
        ax_f1.plot(curve.confidence, curve.f1, color=colour, lw=1.2, label=name)
        if point is not None:
            ax_pr.plot(point["recall"], point["precision"], "o", color=colour, ms=7, mec="black")
            ax_f1.plot(point["threshold"], point["f1"], "o", color=colour, ms=7, mec="black")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
              title="precision-recall (IoU 0.5), chosen points")
    ax_f1.set(xlabel="confidence threshold", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02),
              title="F1 against the threshold")
    for ax in (ax_pr, ax_f1):
        ax.grid(alpha=0.3)
    ax_pr.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], names: list[str], out: Path) -> None:
    m = np.asarray(matrix, dtype=np.float64)
    labels = [*names, "background"]
    norm = m / np.maximum(m.sum(0, keepdims=True), 1)  # column-normalised: what each prediction really was
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax)
    ax.set_title("confusion matrix (conf 0.25, IoU 0.5)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_val_grid(samples: list, spec: DataSpec, out: Path) -> None:
    from models.evaluate import ground_truth

    tiles = []
    for path, dets in samples[:16]:
        img = cv2.imread(str(path))
        gt, cls = ground_truth(Path(path), spec.nc, img.shape[:2])
        for box in gt.astype(int):
            cv2.rectangle(img, tuple(box[:2]), tuple(box[2:]), (0, 200, 0), 1)
        for d in dets:
            cv2.rectangle(img, (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2)), (0, 0, 255), 1)
            cv2.putText(img, f"{d.class_name[:8]} {d.confidence:.2f}", (int(d.x1), max(int(d.y1) - 2, 8)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 255), 1)
        tiles.append(cv2.resize(img, (256, 256)))
    while len(tiles) % 4:
        tiles.append(np.full((256, 256, 3), 114, np.uint8))
    rows = [np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(out), np.vstack(rows))


def plot_run(run_dir: Path, best: Path, spec: DataSpec, device: torch.device) -> None:
    """All plots of a finished run, from results.csv and one evaluation of the best checkpoint."""
    from models.checkpoint import load_model
    from models.evaluate import TorchDetector, evaluate

    plot_results(run_dir / "results.csv", run_dir / "results.png")
    if not best.exists():
        return
    model, ckpt = load_model(best, device)
    metrics = evaluate(TorchDetector(model, ckpt["names"], ckpt["imgsz"], device), spec.val, spec.nc)
    plot_pr_curves(metrics["pr_curves"], metrics["per_class"], run_dir / "pr_curves.png")
    plot_confusion(metrics["confusion_matrix"], list(spec.names), run_dir / "confusion_matrix.png")
    plot_val_grid(metrics["_samples"], spec, run_dir / "val_predictions.jpg")
