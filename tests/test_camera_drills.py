"""Drills against real cameras on loopback (tests/camera_servers.py): an RTSP server (gst-rtsp-server,
H.264), an MJPEG-over-HTTP server and one that demands a password. Each network camera decodes in its
own FFmpeg process; these tests break the cameras the ways plants do (server killed and back, stream
frozen with its socket open, decoder crashed, bad URLs) and assert that the camera recovers and the
others never notice. Recovery times are measured by scripts/camera_drill.py, not asserted here."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from camera_servers import CameraServer, Rig, ffmpeg_available, rtsp_unavailable

from app.ingest.sources import FFmpegSource

QUICK = {"reconnect": {"initial_s": 0.2, "max_s": 1.0}}

pytestmark = [pytest.mark.drill, pytest.mark.timeout(180),
              pytest.mark.skipif(not ffmpeg_available(), reason="no FFmpeg (imageio-ffmpeg or Debian's)")]


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"{what}: not met within {timeout:g} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def rtsp_ok() -> None:
    reason = rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def rtsp(rtsp_ok: None) -> Iterator[CameraServer]:
    with CameraServer.rtsp() as server:
        yield server


@pytest.fixture
def mjpeg() -> Iterator[CameraServer]:
    with CameraServer.mjpeg() as server:
        yield server


def two_cameras(rtsp: CameraServer, mjpeg: CameraServer) -> list[dict]:
    return [{"id": "rtsp", "source": rtsp.url, **QUICK}, {"id": "mjpeg", "source": mjpeg.url, **QUICK}]


def recovered(rig: Rig, cid: str, since_captured: int) -> Callable[[], bool]:
    def check() -> bool:
        st = rig.state(cid)
        return st["connected"] and st["last_error"] is None and st["captured"] > since_captured + 10
    return check


def test_steady_rtsp_and_mjpeg_streams_deliver_frames_with_unique_uids(rtsp: CameraServer,
                                                                       mjpeg: CameraServer) -> None:
    with Rig(two_cameras(rtsp, mjpeg)) as rig:
        wait_until(lambda: rig.captured("rtsp") >= 60 and rig.captured("mjpeg") >= 50, what="frames")
        for cid in ("rtsp", "mjpeg"):
            st = rig.state(cid)
            assert st["connected"] and st["failures"] == {} and st["attempts"] == 1 and st["reconnects"] == 0
        assert rig.shapes == {(480, 640, 3)}
    for cid in ("rtsp", "mjpeg"):  # one uid per frame: every frame that reached the hub has its own
        assert len(rig.uids[cid]) == rig.frames[cid] == rig.captured(cid) - rig.state(cid)["dropped"]


def test_rtsp_server_killed_and_back_three_times_recovers_every_time(rtsp: CameraServer) -> None:
    with Rig([{"id": "cam", "source": rtsp.url, "stall_timeout_s": 3, **QUICK}]) as rig:
        wait_until(lambda: rig.captured("cam") > 30, what="first frames")
        for outage in range(1, 4):
            rtsp.kill()
            wait_until(lambda: not rig.state("cam")["connected"], what=f"outage {outage} seen")
            assert rig.state("cam")["error_kind"] in {"ended", "refused", "timeout", "stalled"}
            tries = rig.state("cam")["attempts"]
            wait_until(lambda t=tries: rig.state("cam")["attempts"] >= t + 1, what="retrying while away")
            before = rig.captured("cam")
            rtsp.start()
            wait_until(recovered(rig, "cam", before), what=f"recovery {outage}")
            assert rig.state("cam")["reconnects"] == outage
        st = rig.state("cam")
        assert st["last_error_at"] is not None and st["attempts"] > 3 + 1  # failed tries while away


@pytest.mark.parametrize("kind", ["rtsp", "mjpeg"])
def test_stream_frozen_with_its_socket_open_restarts_the_decoder(kind: str,
                                                                request: pytest.FixtureRequest) -> None:
    server: CameraServer = request.getfixturevalue(kind)
    with Rig([{"id": "cam", "source": server.url, "stall_timeout_s": 1.0, **QUICK}]) as rig:
        wait_until(lambda: rig.captured("cam") > 20, what="first frames")
        first_decoder = rig.decoder_pid("cam")
        server.freeze()
        try:
            wait_until(lambda: rig.state("cam")["failures"].get("stalled", 0) >= 1, what="stall detected")
            assert rig.state("cam")["last_error"].endswith("stalled: no frame for 1 s")
            wait_until(lambda: rig.state("cam")["attempts"] >= 2, what="decoder restarted")
        finally:
            server.thaw()
        before = rig.captured("cam")
        wait_until(recovered(rig, "cam", before), what="recovery after the thaw")
        assert rig.decoder_pid("cam") != first_decoder


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_a_crashed_decoder_takes_only_its_own_camera_down(rtsp: CameraServer, mjpeg: CameraServer,
                                                          sig: signal.Signals) -> None:
    with Rig(two_cameras(rtsp, mjpeg)) as rig:
        wait_until(lambda: rig.captured("rtsp") > 30 and rig.captured("mjpeg") > 20, what="first frames")
        pid = rig.decoder_pid("rtsp")
        assert pid is not None
        os.kill(pid, sig)
        wait_until(lambda: rig.state("rtsp")["failures"].get("decoder_crashed", 0) == 1, what="crash seen")
        assert sig.name in rig.state("rtsp")["last_error"]
        mjpeg_before, rtsp_before = rig.captured("mjpeg"), rig.captured("rtsp")
        wait_until(recovered(rig, "rtsp", rtsp_before), what="crashed camera back")
        assert rig.decoder_pid("rtsp") != pid
        assert rig.captured("mjpeg") > mjpeg_before  # the other camera kept streaming all along
        other = rig.state("mjpeg")
        assert other["connected"] and other["failures"] == {} and other["attempts"] == 1


def test_bad_urls_say_why(rtsp: CameraServer, mjpeg: CameraServer) -> None:
    silent = socket.socket()  # accepts connections (the kernel does) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there any more
    missing = next(f"/dev/video{n}" for n in range(40, 100) if not Path(f"/dev/video{n}").exists())
    cameras = {
        "refused": f"rtsp://127.0.0.1:{dead_port}/cam",
        "timeout": f"http://127.0.0.1:{silent.getsockname()[1]}/stream",
        "not_found": rtsp.url.replace("/cam", "/nothing"),
        "not_found_http": f"http://127.0.0.1:{mjpeg.port}/nothing",
        "not_video": f"http://127.0.0.1:{mjpeg.port}/text",
        "no_device": missing,
    }
    try:
        bad = [{"id": cid, "source": url, "stall_timeout_s": 1.0, **QUICK} for cid, url in cameras.items()]
        with Rig(bad) as rig:
            wait_until(lambda: all(rig.state(cid)["attempts"] >= 2 for cid in cameras), what="retries")
            kinds = {cid: rig.state(cid)["error_kind"] for cid in cameras}
    finally:
        silent.close()
    assert kinds == {"refused": "refused", "timeout": "timeout", "not_found": "not_found",
                     "not_found_http": "not_found", "not_video": "not_video", "no_device": "no_device"}


def test_a_camera_that_demands_a_password() -> None:
    with CameraServer.mjpeg(user="operator", password="s3cret") as server:
        good = server.url
        wrong = good.replace("s3cret", "guess")
        bare = good.replace("operator:s3cret@", "")
        cams = [{"id": "good", "source": good, **QUICK}, {"id": "wrong", "source": wrong, **QUICK},
                {"id": "bare", "source": bare, **QUICK}]
        with Rig(cams) as rig:
            wait_until(lambda: rig.captured("good") > 10 and rig.state("wrong")["attempts"] >= 2
                       and rig.state("bare")["attempts"] >= 2, what="frames and retries")
            assert rig.state("wrong")["error_kind"] == rig.state("bare")["error_kind"] == "auth"
            assert "s3cret" not in str(rig.state("good")) and "guess" not in str(rig.state("wrong"))
            assert rig.state("good")["failures"] == {}


@pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)
def test_the_service_and_its_other_cameras_outlive_a_crashed_decoder(app_settings, rtsp: CameraServer,
                                                                      mjpeg: CameraServer,
                                                                      tmp_path: Path) -> None:
    """The ingest service with HTTP: a decoder killed with SIGSEGV shows in /api/v1/cameras and the
    metrics with its class, the service keeps answering, both cameras keep committing inspections."""
    from fastapi.testclient import TestClient

    from app.api.deps import service_of
    from app.main import create_ingest_app

    cams = tmp_path / "cameras.yaml"
    net = f"net-{uuid.uuid4().hex[:8]}"  # the metrics registry outlives a test: a camera id of its own
    cams.write_text(f"cameras:\n  - id: {net}\n    source: {rtsp.url}\n    fps_cap: 10\n"
                    f"  - id: mjpeg\n    source: {mjpeg.url}\n    fps_cap: 10\n")
    with TestClient(create_ingest_app(app_settings, cams)) as client:
        pipeline = service_of(client.app).pipeline
        assert pipeline is not None
        rtsp_cam, mjpeg_cam = pipeline.cameras  # in the file's order

        def cameras() -> dict[str, dict]:
            return {c["id"]: c for c in client.get("/api/v1/cameras").json()["cameras"]}

        wait_until(lambda: all(c["committed"] >= 5 for c in cameras().values()), what="inspections")
        source = rtsp_cam.source
        assert isinstance(source, FFmpegSource) and source.decoder_pid is not None
        os.kill(source.decoder_pid, signal.SIGSEGV)
        wait_until(lambda: cameras()[net]["failures"].get("decoder_crashed") == 1, what="crash shown")
        committed = {cid: c["committed"] for cid, c in cameras().items()}
        wait_until(lambda: cameras()[net]["last_error"] is None
                   and all(c["committed"] > committed[cid] + 5 for cid, c in cameras().items()),
                   what="both cameras committing again")
        assert client.get("/healthz").status_code == 200
        assert cameras()[net]["reconnects"] == 1 and cameras()["mjpeg"]["failures"] == {}
        metrics = client.get("/metrics").text
        assert f'inspect_camera_failures_total{{camera="{net}",kind="decoder_crashed"}} 1.0' in metrics
        assert mjpeg_cam.state.attempts == 1
