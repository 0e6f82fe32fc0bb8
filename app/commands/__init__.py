"""Subcommands of `defect-inspect`. Each module exposes ``register(subparsers)``, which adds one
parser with ``set_defaults(func=handler)``; handlers take the parsed args and return an exit code."""
