"""CPU and wall time per frame of decoding a video file through the camera source the pipeline uses
(``OpenCVSource``), for several FFmpeg decoder thread counts, alternating the settings so that the
VM's speed swings hit all of them alike. Prints one JSON line per pass.

    .venv/bin/python scripts/decode_cost.py /tmp/line.mp4 --threads 1,0 --passes 3
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from app.ingest.sources import OpenCVSource


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads, FFmpeg's decoder threads included
    return usage.ru_utime + usage.ru_stime


def decode_all(path: str, threads: int) -> dict:
    source = OpenCVSource(path, live=False, decode_threads=threads)
    source.open()
    c0, t0, frames = cpu_seconds(), time.perf_counter(), 0
    while source.read() is not None:
        frames += 1
    c1, t1 = cpu_seconds(), time.perf_counter()
    source.close()
    return {"decode_threads": threads, "frames": frames,
            "cpu_ms_per_frame": round(1000 * (c1 - c0) / max(frames, 1), 3),
            "wall_ms_per_frame": round(1000 * (t1 - t0) / max(frames, 1), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--threads", default="1,0", help="comma list; 0 = OpenCV's choice")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    for k in range(args.passes):
        for threads in counts:
            print(json.dumps({"pass": k + 1, **decode_all(args.video, threads)}), flush=True)


if __name__ == "__main__":
    main()
