"""The Prometheus alert rules under their own unit tests (deploy/prometheus/alerts.test.yml): the
disk-full-within-6-hours prediction fires for a disk filling at 12 GB an hour and stays quiet while
the pruner keeps up; storage faults and skipped images alert. Runs Debian's promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package "
                                                             "`prometheus`)")


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    done = subprocess.run([PROMTOOL, "test", "rules", str(PROMETHEUS / "alerts.test.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_a_broken_expectation_fails_the_promtool_run(tmp_path: Path) -> None:
    """The run above can fail: the same tests expecting the disk alert for the steady disk do."""
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
    tests = (PROMETHEUS / "alerts.test.yml").read_text()
    broken = tests.replace("instance: edge-1\n              job: inspect-ingest",
                           "instance: edge-2\n              job: inspect-ingest", 1)
    assert broken != tests
    (tmp_path / "alerts.test.yml").write_text(broken)
    done = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "alerts.test.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
