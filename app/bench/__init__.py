"""Benchmarks behind `defect-inspect bench`: typed options in, one JSON-ready dict out.

``measure`` holds what every benchmark shares (the machine, CPU split, frames, the engine's own
throughput), ``pipeline`` the end-to-end camera pipeline, ``ultralytics`` the optional comparison.
The argparse side lives in ``app/commands/bench.py`` alone."""
