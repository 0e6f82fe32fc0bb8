"""`defect-inspect`: one command, subcommands discovered through the
``defect_inspect.commands`` entry-point group (see pyproject.toml); command groups such as
``dataset`` discover theirs the same way, so the service and the training code each register their
own without importing each other."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from app import __version__
from app.errors import UserError

log = logging.getLogger("defect_inspect")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defect-inspect",
        description="Industrial surface-defect inspection: serve, ingest cameras, train, evaluate, export.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_discovered(parser.add_subparsers(dest="command", metavar="COMMAND"), "defect_inspect.commands")
    return parser


def add_discovered(sub: argparse._SubParsersAction, group: str) -> None:
    """Add the subcommands registered under the entry-point ``group`` (each a ``register(sub)``)."""
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            register = ep.load()
        except (ImportError, AttributeError) as exc:  # a part whose extra is not installed, a stale install
            sub.add_parser(ep.name, help=f"(unavailable: {exc})")
            continue
        register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(  # stderr: stdout carries only what a command prints (a key, a JSON report)
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except UserError as exc:  # the CLI edge: one line naming what is wrong, exit 2
        print(f"defect-inspect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
