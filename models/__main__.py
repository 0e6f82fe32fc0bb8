"""`python -m models train|evaluate|export|anchors|pretrain ...`: the detector's subcommands without the
installed `defect-inspect` entry points (e.g. on a GPU machine that only has the source tree)."""

from __future__ import annotations

import argparse
import logging
import sys

from app.errors import UserError
from models.cli import (
    register_anchors,
    register_evaluate,
    register_export,
    register_pretrain,
    register_train,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (register_train, register_evaluate, register_export, register_anchors, register_pretrain):
        register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"python -m models {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
