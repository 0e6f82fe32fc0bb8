"""What a script captures from stdout: `db upgrade` then `keys create` in fresh processes, as a setup
script runs them; the migration's log lines go to stderr and stdout holds the key alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def _run(*argv: str, db: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "INSPECT_DATABASE_URL": db, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO_ROOT)


def test_a_new_key_is_all_of_stdout_after_a_migration(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'defects.db'}"
    upgrade = _run("db", "upgrade", db=db)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "alembic" in upgrade.stderr and "alembic" not in upgrade.stdout  # the log is on stderr
    assert "alembic.runtime.plugins" not in upgrade.stderr  # plugin announcements are not news
    created = _run("keys", "create", "--role", "camera", "--name", "line-1", db=db)
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dik_") and " " not in lines[0], created.stdout
    assert "shown once" in created.stderr
