"""Soak: run ``defect-inspect ingest`` on a cameras file for a fixed time and sample it once a minute.

Each sample (one JSON line in ``<out>/samples.jsonl``) holds the ingest process's RSS (VmRSS, and its
anonymous, file and shared parts), the resident size gained per mapping since the first sample (which
library, the heap or anonymous memory grew), the image store on disk (``du``-style: apparent bytes and
allocated bytes, file count) and the counters the process
exports on ``/metrics``: frames per stage, image-store bytes, free disk, pruned files. At the end the
process gets SIGTERM (a clean stop), and the data folder is checked for consistency: every image a row
names exists, and every file in the image store belongs to a row. ``<out>/summary.json`` holds the
figures ``docs/reliability.md`` quotes.

    python scripts/soak.py --cameras cams.yaml --data data --minutes 60 --out soak-out \
        --env INSPECT_IMAGE_STORE_MAX_GB=2 --env INSPECT_PRUNE_INTERVAL_S=30

The ingest runs with the environment of this script plus ``INSPECT_DATA_DIR`` and
``INSPECT_DATABASE_URL`` (SQLite in the data folder) and the ``--env`` pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

METRIC_LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
WANTED = ("inspect_frames_total", "inspect_image_store_bytes", "inspect_disk_free_bytes",
          "inspect_pruned_total", "inspect_images_skipped_total")


def scrape(port: int) -> dict[str, float]:
    """The wanted series of the process's /metrics, summed over cameras: ``name{label}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line)
        if not match or not match["name"].startswith(WANTED):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        labels.pop("camera", None)
        key = match["name"] + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
                               if labels else "")
        out[key] = out.get(key, 0.0) + float(match["value"])
    return out


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and its parts (anonymous, file-backed, shared memory) in MiB, from /proc/<pid>/status."""
    wanted = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line else ""
        if key in wanted:
            out[wanted[key]] = round(int(line.split()[1]) / 1024, 1)
    if "rss" not in out:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return out


def rss_by_mapping(pid: int) -> dict[str, float]:
    """Resident MiB per mapped object (a library, a file, ``[heap]``, ``[anon]`` for unnamed memory)."""
    out: dict[str, float] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
            name = fields[5] if len(fields) > 5 else "[anon]"
        elif fields[0] == "Rss:":
            out[name] = out.get(name, 0.0) + int(fields[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.5}


def growth(first: dict[str, float], last: dict[str, float]) -> dict[str, float]:
    """Mappings whose resident size changed by at least 0.5 MiB, largest change first."""
    names = set(first) | set(last)
    changes = {n: round(last.get(n, 0.0) - first.get(n, 0.0), 1) for n in names}
    return dict(sorted(((n, d) for n, d in changes.items() if abs(d) >= 0.5), key=lambda kv: -abs(kv[1])))


def disk_use(folder: Path) -> dict[str, int]:
    """Apparent bytes, allocated bytes (what ``du -sB1`` counts) and the number of files under ``folder``."""
    apparent = allocated = files = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:  # pruned while we walked
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
            files += 1
    return {"apparent": apparent, "allocated": allocated, "files": files}


def consistency(data_dir: Path, database_url: str) -> dict[str, int]:
    """Rows vs files in the image store: files named by rows but missing, files no row names."""
    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from app.db.models import Inspection
    from app.retention import files_named_by_rows

    images_root = data_dir / "images"
    engine = create_engine(database_url)
    with Session(engine) as session:
        rows = session.scalar(select(func.count(Inspection.id))) or 0
        expired = session.scalar(select(func.count(Inspection.id))
                                 .where(Inspection.image_expired_at.is_not(None))) or 0
        named = files_named_by_rows(session)
    engine.dispose()
    on_disk = {str(p.relative_to(images_root)) for p in images_root.rglob("*") if p.is_file()}
    named = {n.removeprefix("images/") for n in named}
    return {"rows": rows, "rows_image_expired": expired, "files": len(on_disk),
            "named_but_missing": len(named - on_disk), "files_without_row": len(on_disk - named)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="data folder (created; must be empty)")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples")
    parser.add_argument("--port", type=int, default=18722)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the ingest process")
    args = parser.parse_args()

    data_dir = args.data.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        parser.error(f"{data_dir} is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{data_dir / 'inspect.db'}"
    env = dict(os.environ, INSPECT_DATA_DIR=str(data_dir), INSPECT_DATABASE_URL=database_url)
    for pair in args.env:
        name, _, value = pair.partition("=")
        env[name] = value
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)

    log = (args.out / "ingest.log").open("w")
    proc = subprocess.Popen([*cli, "ingest", "--cameras", str(args.cameras), "--port", str(args.port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    samples = []
    first_mappings: dict[str, float] = {}
    with (args.out / "samples.jsonl").open("w") as out:
        next_at = started + args.interval
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += args.interval
            if proc.poll() is not None:
                print(f"ingest exited early with {proc.returncode}", file=sys.stderr)
                return 1
            memory = rss_mib(proc.pid)
            sample = {"t_s": round(time.monotonic() - started, 1), "rss_mib": memory["rss"],
                      "memory_mib": memory, "images": disk_use(data_dir / "images")}
            mappings = rss_by_mapping(proc.pid)
            first_mappings = first_mappings or mappings
            sample["growth_since_first_mib"] = growth(first_mappings, mappings)
            try:
                sample["metrics"] = scrape(args.port)
            except OSError as exc:
                sample["metrics_error"] = str(exc)
            samples.append(sample)
            out.write(json.dumps(sample) + "\n")
            out.flush()
            frames = {k: v for k, v in sample.get("metrics", {}).items() if k.startswith("inspect_frames")}
            print(f"{sample['t_s']:>7.0f} s  rss {memory}  "
                  f"store {sample['images']['allocated'] / 1e9:.2f} GB  {frames}", flush=True)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    log.close()
    summary = {"minutes": args.minutes, "exit_code": proc.returncode, "samples": len(samples),
               "rss_mib": [s["rss_mib"] for s in samples],
               "growth_first_to_last_mib": samples[-1]["growth_since_first_mib"],
               "store_allocated_max": max(s["images"]["allocated"] for s in samples),
               "last_metrics": samples[-1].get("metrics", {}),
               "consistency": consistency(data_dir, database_url)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["consistency"]), f"exit {proc.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
