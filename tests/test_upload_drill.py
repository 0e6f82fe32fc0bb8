"""Drill: six clients post 6000x6000 PNGs at once to a real `defect-inspect serve` (the shipped model,
SQLite): every upload is answered 201 or 503, at least two decode at once, and the server stays under
600 MB resident (scripts/upload_load.py samples it; docs/reliability.md, "Large uploads")."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RSS_BOUND_MB = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`defect-inspect serve` with the settings a new user starts with (auth off for the clients)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECT_")}
    env.update(PYTHONPATH=str(REPO), INSPECT_DATABASE_URL=f"sqlite:///{tmp_path / 'inspect.db'}",
               INSPECT_DATA_DIR=str(tmp_path / "data"), INSPECT_AUTH_ENABLED="false")
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.3)
        yield proc, url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.drill
def test_six_concurrent_6000px_pngs_are_all_answered_within_the_memory_bound(served) -> None:
    proc, url = served
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "upload_load.py"), "--url", url,
                          "--pid", str(proc.pid), "--clients", "6", "--rounds", "1", "--size", "6000"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert sum(report["statuses"].values()) == 6
    assert set(report["statuses"]) <= {"201", "503"}, report
    assert report["in_flight_max"] >= 2, report
    assert report["rss_peak_mb"] < RSS_BOUND_MB, report
