"""`defect-inspect dataset`: training-data commands. Its subcommands come from the
``defect_inspect.dataset_commands`` entry-point group: ``import`` and ``check`` from the training code
(``models/data/cli.py``), ``export-reviewed`` from the service (``app/commands/export_reviewed.py``)."""

from __future__ import annotations

import argparse

from app.cli import add_discovered


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="import, check and export training datasets")
    add_discovered(parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND"),
                   "defect_inspect.dataset_commands")

    def no_subcommand(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=no_subcommand)
