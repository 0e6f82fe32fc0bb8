"""CPU and latency of decoding a live 640x480 stream two ways: the FFmpeg decoder process the service
uses for network cameras (``FFmpegSource``: YUV4MPEG I420 through a pipe, BGR conversion in the service)
and OpenCV's in-process FFmpeg capture it replaced (``OpenCVSource``). Servers on loopback from
tests/camera_servers.py: RTSP H.264 at 30 FPS and MJPEG over HTTP at 30 FPS; the MJPEG frames carry their
send time, so latency (send to BGR frame in the service) is measured there. CPU is the reading process
(all its threads) plus the decoder process, in % of one core; the servers are not counted. The two ways
alternate, so the machine's speed swings hit both alike. One JSON line per pass; then the cost of
one failed connection attempt (a camera that is away: a decoder started against a closed port).

    .venv/bin/python scripts/stream_decoder_cost.py --seconds 10 --passes 2 --failed-attempts 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from camera_servers import CameraServer  # noqa: E402
from servers.mjpeg_server import now_ms, sent_ms  # noqa: E402

from app.ingest.sources import FFmpegSource, OpenCVSource, Source, SourceError  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def measure(source: Source, seconds: float, stamped: bool) -> dict:
    source.open()
    for _ in range(10):  # past the connect
        source.read()
    decoder = source.decoder_pid if isinstance(source, FFmpegSource) else None
    c0, d0, t0 = self_cpu(), process_cpu(decoder), time.monotonic()
    frames, latencies = 0, []
    while time.monotonic() - t0 < seconds:
        frame = source.read()
        assert frame is not None
        frames += 1
        if stamped:
            latencies.append((now_ms() - sent_ms(frame.image)) & 0xFFFFFFFF)
    wall = time.monotonic() - t0
    cpu_service, cpu_decoder = self_cpu() - c0, process_cpu(decoder) - d0
    source.close()
    out = {"fps": round(frames / wall, 1), "cpu_service_pct": round(100 * cpu_service / wall, 1),
           "cpu_decoder_process_pct": round(100 * cpu_decoder / wall, 1),
           "cpu_total_pct": round(100 * (cpu_service + cpu_decoder) / wall, 1)}
    if latencies:
        latencies.sort()
        out |= {"latency_ms_mean": round(statistics.mean(latencies), 1),
                "latency_ms_p95": latencies[int(0.95 * (len(latencies) - 1))]}
    return out


def failed_attempt_cost(attempts: int) -> dict:
    source = FFmpegSource("rtsp://127.0.0.1:9/away")  # port 9 (discard): nothing listens on loopback
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, d0, t0 = self_cpu(), children.ru_utime + children.ru_stime, time.monotonic()
    for _ in range(attempts):
        with contextlib.suppress(SourceError):
            source.open()
        source.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    decoder = children.ru_utime + children.ru_stime - d0
    return {"failed_attempts": attempts, "decoder_cpu_ms": round(1000 * decoder / attempts, 1),
            "service_cpu_ms": round(1000 * (self_cpu() - c0) / attempts, 1),
            "wall_ms": round(1000 * (time.monotonic() - t0) / attempts, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--failed-attempts", type=int, default=50)
    args = p.parse_args()
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")  # as the FFmpeg process
    with CameraServer.rtsp(fps=30) as rtsp, CameraServer.mjpeg(fps=30) as mjpeg:
        for n in range(1, args.passes + 1):
            for name, server in (("rtsp-h264", rtsp), ("mjpeg-http", mjpeg)):
                for way, make in (("ffmpeg-process", lambda u: FFmpegSource(u)),
                                  ("opencv-in-process", lambda u: OpenCVSource(u, live=True))):
                    result = measure(make(server.url), args.seconds, stamped=name == "mjpeg-http")
                    print(json.dumps({"pass": n, "stream": name, "decoder": way} | result), flush=True)
    if args.failed_attempts:
        print(json.dumps(failed_attempt_cost(args.failed_attempts)), flush=True)


if __name__ == "__main__":
    main()
