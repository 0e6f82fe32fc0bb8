"""Peak memory and time of decoding one large upload, in full and reduced for the model input
(``app.images.decode`` with and without ``fit``). Each decode runs in a fresh process whose peak
resident size (VmHWM, reset just before) is the decode's own. Linux only. Prints one JSON line per
format.

    .venv/bin/python scripts/upload_decode_peak.py --size 6000 --fit 256
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def status_mb(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return int(match.group(1)) / 1024


def measure(path: str, fit: int) -> dict:
    from app import images

    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts over at the current size
    before = status_mb("VmRSS")
    start = time.perf_counter()
    frame, _ = images.decode(data, 10**9, (fit, fit) if fit else None)
    seconds = time.perf_counter() - start
    return {"frame": list(frame.shape), "peak_mb": round(status_mb("VmHWM") - before, 1),
            "decode_ms": round(seconds * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=6000, help="side of the square test image")
    parser.add_argument("--fit", type=int, default=256, help="the model input side")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "FIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return
    frame = np.full((args.size, args.size, 3), 150, np.uint8)
    frame[::7, ::5] = 90  # texture, so the files are not trivially small
    out = Path("/tmp") / f"upload-peak-{args.size}"
    for ext in (".png", ".jpg"):
        path = out.with_suffix(ext)
        cv2.imwrite(str(path), frame)
        row: dict = {"format": ext[1:], "bytes": path.stat().st_size}
        for name, fit in (("full", 0), ("reduced", args.fit)):
            run = subprocess.run([sys.executable, __file__, "--measure", str(path), str(fit)],
                                 capture_output=True, text=True, check=True)
            row[name] = json.loads(run.stdout)
        print(json.dumps(row))
        path.unlink()


if __name__ == "__main__":
    main()
