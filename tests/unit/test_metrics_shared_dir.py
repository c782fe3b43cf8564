"""The gunicorn master prepares prometheus_client's multiprocess directory once, before
the workers fork: an operator's directory keeps the files of running processes (a
reconciler sharing it) and loses those of dead ones; without one, a private directory
per master, those of dead masters removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from certlocker.metrics import shared_dir


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shared_dir, "_prepared_by", None)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(shared_dir.tempfile, "tempdir", None)


def test_a_given_directory_keeps_live_files_and_loses_dead_ones(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    live = given / f"counter_{os.getppid()}.db"
    dead = given / f"histogram_{dead_pid()}.db"
    other = given / "notes.txt"
    for f in (live, dead, other):
        f.write_text("x")
    monkeypatch.setenv(shared_dir.VARIABLE, str(given))
    assert shared_dir.prepare() == given
    assert live.exists() and other.exists() and not dead.exists()


def test_without_one_each_master_gets_a_private_directory_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(shared_dir.VARIABLE, "")  # recorded, so prepare()'s value is undone
    monkeypatch.delenv(shared_dir.VARIABLE)
    stale = tmp_path / "tmp" / f"{shared_dir.PRIVATE_PREFIX}{dead_pid()}"
    stale.mkdir()
    (stale / "counter_1.db").write_text("x")
    running = tmp_path / "tmp" / f"{shared_dir.PRIVATE_PREFIX}{os.getppid()}"
    running.mkdir()
    made = shared_dir.prepare()
    assert os.environ[shared_dir.VARIABLE] == str(made)
    assert made.name == f"{shared_dir.PRIVATE_PREFIX}{os.getpid()}" and made.is_dir()
    assert not stale.exists() and running.exists()
    (made / f"counter_{os.getpid()}.db").write_text("x")
    assert shared_dir.prepare() == made  # gunicorn asks again on reload: nothing changes
    assert (made / f"counter_{os.getpid()}.db").exists()
