"""Write the class-stratified label subsets of a data set's training split as image lists (paths as
in the split's list, relative to the data set's root), for the pretraining measurement of
docs/training.md. Run from the repository root:

    python scripts/label_subsets.py [--data ../shared/datasets/neu-det/data.yaml] \
        [--out docs/ablation/label-subsets] [--prefix neu-det-train] [--fractions 1.0 0.25 0.1] [--seed 0]

The committed lists for NEU-DET (seed 0) are docs/ablation/label-subsets/neu-det-train-{100,25,10}.txt.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NEU_DET_YAML = REPO_ROOT.parent / "shared" / "datasets" / "neu-det" / "data.yaml"
sys.path.insert(0, str(REPO_ROOT))

from models.data.formats import load_data_yaml  # noqa: E402
from models.data.subsets import label_subset  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(NEU_DET_YAML))
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "ablation" / "label-subsets"))
    parser.add_argument("--prefix", default="neu-det-train")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = load_data_yaml(args.data)
    root = spec.root
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fraction in args.fractions:
        chosen = label_subset(spec.train, spec.nc, fraction, args.seed)
        target = out / f"{args.prefix}-{round(fraction * 100)}.txt"
        target.write_text("".join(f"{Path(os.path.relpath(p, root)).as_posix()}\n" for p in chosen))
        print(f"{target}: {len(chosen)} of {len(spec.train)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
