"""Concurrent large uploads against a running service, with the server's memory sampled.

``clients`` threads post the same large PNG (raw ``image/png`` body) to ``POST /api/v1/inspections``
together, ``rounds`` times each. Meanwhile the resident set size of the server process (``--pid``,
read from /proc) and the ``inspect_upload_in_flight`` gauge of its /metrics are sampled. Prints one
JSON object: the answers by status, latency p50/p99 of all answers, the server's RSS before and at its
peak (MB), the most uploads seen in flight at once, and the image's size.

    defect-inspect serve --port 8000 &
    python scripts/upload_load.py --url http://127.0.0.1:8000 --pid $! --clients 6 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

IN_FLIGHT = re.compile(rb"^inspect_upload_in_flight (\S+)$", re.MULTILINE)


def large_png(side: int) -> bytes:
    """A ``side`` x ``side`` grey steel-like frame with a few dark patches: about 100 kB at 6000 px."""
    frame = np.full((side, side, 3), 150, np.uint8)
    step = max(side // 8, 1)
    for k in range(1, 8):
        x, y = k * step, (k * 37 % 8) * step
        frame[y:y + step // 3, x:x + step // 2] = 60 + 10 * k
    ok, buf = cv2.imencode(".png", frame)
    if not ok:
        raise RuntimeError("cannot encode the PNG")
    return buf.tobytes()


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(match.group(1)) / 1024


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, float, str | None]:
    """(status, seconds, Retry-After) of one upload; status 0 when no answer came (reset, timeout)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            return resp.status, time.perf_counter() - start, None
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, time.perf_counter() - start, exc.headers.get("Retry-After")
    except OSError:
        return 0, time.perf_counter() - start, None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def run(base_url: str, pid: int, clients: int, rounds: int, side: int, key: str | None,
        timeout: float) -> dict:
    body = large_png(side)
    headers = {"Content-Type": "image/png"}
    if key:
        headers["X-API-Key"] = key
    upload_url = base_url.rstrip("/") + "/api/v1/inspections"
    metrics_url = base_url.rstrip("/") + "/metrics"
    answers: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    done = threading.Event()
    samples = {"rss_peak": rss_mb(pid), "in_flight_max": 0.0}
    rss_before = samples["rss_peak"]

    def client() -> None:
        start.wait()
        for _ in range(rounds):
            answer = post(upload_url, body, headers, timeout)
            with lock:
                answers.append(answer)

    def sampler() -> None:
        while not done.is_set():
            samples["rss_peak"] = max(samples["rss_peak"], rss_mb(pid))
            try:
                with urllib.request.urlopen(metrics_url, timeout=5) as resp:
                    match = IN_FLIGHT.search(resp.read())
                if match:
                    samples["in_flight_max"] = max(samples["in_flight_max"], float(match.group(1)))
            except OSError:
                pass
            time.sleep(0.02)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    watcher = threading.Thread(target=sampler)
    for t in threads:
        t.start()
    watcher.start()
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    done.set()
    watcher.join()
    latencies = [seconds for _, seconds, _ in answers]
    statuses: dict[str, int] = {}
    for status, _, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "clients": clients, "rounds": rounds, "image": f"{side}x{side} PNG", "image_bytes": len(body),
        "statuses": statuses, "retry_after": sorted({r for _, _, r in answers if r}),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(percentile(latencies, 99), 3),
        "wall_s": round(wall, 2),
        "rss_before_mb": round(rss_before, 1), "rss_peak_mb": round(samples["rss_peak"], 1),
        "in_flight_max": int(samples["in_flight_max"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--pid", type=int, required=True, help="the server process, for its RSS")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="uploads per client, one after another")
    parser.add_argument("--size", type=int, default=6000, help="side of the square PNG in pixels")
    parser.add_argument("--key", default=None, help="an API key (X-API-Key) with the camera role")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer")
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.pid, args.clients, args.rounds, args.size, args.key, args.timeout)))


if __name__ == "__main__":
    main()
