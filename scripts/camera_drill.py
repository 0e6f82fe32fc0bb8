"""Recovery times of network cameras, measured against real servers on loopback (the servers and the
capture rig of tests/camera_servers.py): an RTSP server (gst-rtsp-server, H.264 640x480 at 30 FPS) and an
MJPEG-over-HTTP server (640x480 at 25 FPS), each camera with the cameras file's defaults unless a drill
says otherwise. Prints one JSON line per measurement and a summary line per drill.

    .venv/bin/python scripts/camera_drill.py --outages 3 --outage-s 5

Drills: ``outage`` (server killed, back after --outage-s: seconds from its return until frames flow
again, per outage), ``stall`` (server frozen with its sockets open: seconds until the watchdog restarts the
decoder, for several stall_timeout_s), ``crash`` (decoder killed with SIGSEGV: seconds until frames flow
again, the other camera's frames meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from camera_servers import CameraServer, Rig  # noqa: E402


def wait(cond: Callable[[], bool], timeout: float = 60.0, step: float = 0.005) -> float:
    """Seconds until cond() holds (polled every 5 ms)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not met")
        time.sleep(step)
    return time.monotonic() - t0


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def outage_drill(kind: str, outages: int, outage_s: float) -> None:
    server = CameraServer.rtsp() if kind == "rtsp" else CameraServer.mjpeg()
    server.start()
    back = []
    with Rig([{"id": "cam", "source": server.url}]) as rig:
        wait(lambda: rig.captured("cam") > 30)
        for n in range(1, outages + 1):
            server.kill()
            t_kill = time.monotonic()
            down_s = wait(lambda: not rig.state("cam")["connected"])
            time.sleep(max(0.0, outage_s - (time.monotonic() - t_kill)))
            server.start()
            before = rig.captured("cam")
            recovery_s = wait(lambda b=before: rig.captured("cam") > b)
            back.append(recovery_s)
            st = rig.state("cam")
            emit({"drill": "outage", "server": kind, "outage": n, "down_detected_s": round(down_s, 3),
                  "frames_again_after_return_s": round(recovery_s, 3), "attempts": st["attempts"],
                  "reconnects": st["reconnects"], "failures": st["failures"]})
            wait(lambda b=before: rig.captured("cam") > b + 30)
    server.kill()
    emit({"drill": "outage", "server": kind, "summary": True, "outages": outages, "outage_s": outage_s,
          "frames_again_s_max": round(max(back), 3), "frames_again_s_mean": round(sum(back) / len(back), 3)})


def stall_drill(kind: str, stall_timeouts: list[float]) -> None:
    for stall_s in stall_timeouts:
        server = CameraServer.rtsp() if kind == "rtsp" else CameraServer.mjpeg()
        server.start()
        with Rig([{"id": "cam", "source": server.url, "stall_timeout_s": stall_s}]) as rig:
            wait(lambda: rig.captured("cam") > 30)
            last_frame = rig.runners["cam"].state.last_frame_mono
            server.freeze()
            restarted_s = wait(lambda: rig.state("cam")["failures"].get("stalled", 0) >= 1)
            assert last_frame is not None
            # from the last frame the decoder delivered to the watchdog's restart
            since_last_frame = time.monotonic() - (rig.runners["cam"].state.last_frame_mono or last_frame)
            server.thaw()
            before = rig.captured("cam")
            recovery_s = wait(lambda b=before: rig.captured("cam") > b)
            emit({"drill": "stall", "server": kind, "stall_timeout_s": stall_s,
                  "restart_after_last_frame_s": round(since_last_frame, 3),
                  "restart_after_freeze_s": round(restarted_s, 3),
                  "frames_again_after_thaw_s": round(recovery_s, 3)})
        server.kill()


def crash_drill(repeats: int) -> None:
    rtsp, mjpeg = CameraServer.rtsp(), CameraServer.mjpeg()
    rtsp.start()
    mjpeg.start()
    with Rig([{"id": "rtsp", "source": rtsp.url}, {"id": "mjpeg", "source": mjpeg.url}]) as rig:
        wait(lambda: rig.captured("rtsp") > 30 and rig.captured("mjpeg") > 30)
        for n in range(1, repeats + 1):
            pid = rig.decoder_pid("rtsp")
            assert pid is not None
            before, other_before = rig.captured("rtsp"), rig.captured("mjpeg")
            t0 = time.monotonic()
            os.kill(pid, signal.SIGSEGV)
            recovery_s = wait(lambda b=before, k=n: rig.state("rtsp")["failures"].get("decoder_crashed", 0)
                              >= k and rig.captured("rtsp") > b)
            elapsed = time.monotonic() - t0
            other = rig.captured("mjpeg") - other_before
            emit({"drill": "crash", "signal": "SIGSEGV", "repeat": n, "frames_again_s": round(recovery_s, 3),
                  "other_camera_fps_meanwhile": round(other / elapsed, 1),
                  "other_camera_failures": rig.state("mjpeg")["failures"]})
            wait(lambda b=before: rig.captured("rtsp") > b + 30)
    rtsp.kill()
    mjpeg.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drills", default="outage,stall,crash")
    p.add_argument("--outages", type=int, default=3)
    p.add_argument("--outage-s", type=float, default=5.0)
    p.add_argument("--stall-timeouts", default="2,8")
    args = p.parse_args()
    drills = args.drills.split(",")
    if "outage" in drills:
        for kind in ("rtsp", "mjpeg"):
            outage_drill(kind, args.outages, args.outage_s)
    if "stall" in drills:
        for kind in ("rtsp", "mjpeg"):
            stall_drill(kind, [float(x) for x in args.stall_timeouts.split(",")])
    if "crash" in drills:
        crash_drill(3)


if __name__ == "__main__":
    main()
