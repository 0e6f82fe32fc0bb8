"""Run one ``defect-inspect bench ...`` command several times on a quiet machine; one JSON line per run.

Before each run it waits until the machine has been quiet (less than ``--quiet-share`` of a core busy
over 2 s, from /proc/stat); each line is the bench's own JSON plus ``started`` (local time),
``loadavg_start`` / ``loadavg_end`` (/proc/loadavg) and ``other_cpu_s``: CPU seconds that processes
other than the bench used during the run (whole-machine busy time minus the bench's rusage), so a run
disturbed by someone else's work can be told apart.

    .venv/bin/python scripts/bench_repeat.py --runs 4 -- bench pipeline --model M --source S --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CLI = [str(Path(sys.executable).with_name("defect-inspect"))]
# defect-inspect from another tree: the editable install's import hook would find this checkout's
# ``app`` first, so it is taken out of sys.meta_path before DIR goes to the front of sys.path
OTHER_CODE = """
import sys
hooks = sys.meta_path
hooks[:] = [f for f in hooks if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
sys.path.insert(0, sys.argv[1])
from app.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def busy_seconds() -> float:
    """Whole-machine busy CPU seconds since boot (user+nice+system+irq+softirq+steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(share: float, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b0 = busy_seconds()
        time.sleep(2.0)
        if (busy_seconds() - b0) / 2.0 < share:
            return
    print(f"# machine not quiet after {timeout:.0f} s; running anyway", file=sys.stderr)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quiet-share", type=float, default=0.1, help="busy share of one core counted as quiet")
    ap.add_argument("--quiet-timeout", type=float, default=120.0)
    ap.add_argument("--code", default=None, metavar="DIR",
                    help="run the app package of DIR instead of the installed one, for A/B comparisons: "
                         "mkdir DIR && git archive COMMIT app | tar -x -C DIR")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the defect-inspect arguments")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the defect-inspect arguments after --")
    cli = [sys.executable, "-c", OTHER_CODE, str(Path(args.code).resolve())] if args.code else CLI
    for _ in range(args.runs):
        wait_quiet(args.quiet_share, args.quiet_timeout)
        started, load0 = time.strftime("%H:%M:%S"), loadavg()
        busy0, own0 = busy_seconds(), children_cpu()
        proc = subprocess.run(cli + command, capture_output=True, text=True)
        other = (busy_seconds() - busy0) - (children_cpu() - own0)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out |= {"started": started, "loadavg_start": load0, "loadavg_end": loadavg(),
                "other_cpu_s": round(max(other, 0.0), 2)}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
