"""Rebuild app/sample/neu-det: the small NEU-DET sample shipped with the package.

The choice is fixed by the data set's own split: for each class, the first PER_CLASS names of that
class in val.txt (which lists every fifth name in sorted order). Images are copied byte for byte
(JPEG as in the data set), with their YOLO label files; data.yaml carries the class names and
val.txt lists the sample. Run from the repository root:

    python scripts/make_neu_sample.py [--source ../shared/datasets/neu-det] [--per-class 15]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "datasets" / "neu-det"
DEFAULT_OUT = REPO_ROOT / "app" / "sample" / "neu-det"
PER_CLASS = 15


def class_of(stem: str, names: list[str]) -> str:
    """The class a NEU-DET file name starts with (``rolled-in_scale_12`` -> ``rolled-in_scale``)."""
    prefix = stem.rsplit("_", 1)[0]
    if prefix not in names:
        raise SystemExit(f"{stem}: file name does not start with a class name")
    return prefix


def choose(val_list: Path, names: list[str], per_class: int) -> list[str]:
    """Image stems: the first ``per_class`` of each class in the order of ``val_list``."""
    chosen: dict[str, list[str]] = {n: [] for n in names}
    for line in val_list.read_text().split():
        stem = Path(line).stem
        picked = chosen[class_of(stem, names)]
        if len(picked) < per_class:
            picked.append(stem)
    short = [n for n, stems in chosen.items() if len(stems) < per_class]
    if short:
        raise SystemExit(f"fewer than {per_class} val images for: {', '.join(short)}")
    return [stem for n in names for stem in chosen[n]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the full NEU-DET folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--per-class", type=int, default=PER_CLASS)
    args = ap.parse_args()
    names = [str(n) for n in yaml.safe_load((args.source / "data.yaml").read_text())["names"]]
    stems = choose(args.source / "val.txt", names, args.per_class)
    for sub in ("images", "labels"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
        (args.out / sub).mkdir(parents=True)
    for stem in stems:
        shutil.copyfile(args.source / "images" / f"{stem}.jpg", args.out / "images" / f"{stem}.jpg")
        shutil.copyfile(args.source / "labels" / f"{stem}.txt", args.out / "labels" / f"{stem}.txt")
    (args.out / "val.txt").write_text("".join(f"images/{stem}.jpg\n" for stem in stems))
    (args.out / "data.yaml").write_text(
        "# A sample of NEU-DET (see README.md): hot-rolled steel strip surface defects, YOLO format.\n"
        + yaml.safe_dump({"path": ".", "train": "val.txt", "val": "val.txt", "nc": len(names),
                          "names": names}, sort_keys=False, default_flow_style=None))
    print(f"{len(stems)} images ({args.per_class} per class) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
