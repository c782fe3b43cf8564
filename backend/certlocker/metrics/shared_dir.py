"""The directory prometheus_client's multiprocess mode shares between the gunicorn
workers, prepared once in the gunicorn master before any worker starts.

Each worker counts its own issuances and ACME requests; without a shared directory a
scrape reads whichever worker answered, so counters jumped between two values. The
master (``certlocker.gunicorn_worker``'s ``setup``) makes sure every worker inherits
``PROMETHEUS_MULTIPROC_DIR``:

- set by the operator (to share it with a reconciler on the same host): used, and the
  files of processes no longer running are removed, so a restart starts clean without
  pulling a running reconciler's file away;
- unset: a private directory for this master, ``<tmp>/certlocker-metrics-<pid>``, and
  those of masters no longer running are removed.

Imports nothing of prometheus_client: the variable must be set before it is imported.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
PRIVATE_PREFIX = "certlocker-metrics-"
_DB_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")  # counter_<pid>.db, histogram_<pid>.db, ...
_prepared_by: int | None = None


def prepare() -> Path:
    """The shared directory, ready, and named in this process's environment (which
    forked workers inherit). Once per process: later calls (gunicorn asks again on
    every reload) change nothing."""
    global _prepared_by
    given = os.environ.get(VARIABLE)
    if _prepared_by == os.getpid() and given:
        return Path(given)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        removed = _remove_dead_files(path)
    else:
        base = Path(tempfile.gettempdir())
        removed = _remove_dead_private_dirs(base)
        path = base / f"{PRIVATE_PREFIX}{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700)
        os.environ[VARIABLE] = str(path)
    _prepared_by = os.getpid()
    log.info("metrics.shared_dir", extra={"path": str(path), "removed": removed,
                                          "given": bool(given)})
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: running
    return True


def _remove_dead_files(path: Path) -> int:
    removed = 0
    for entry in path.iterdir():
        match = _DB_FILE.match(entry.name)
        if match and not _alive(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove_dead_private_dirs(base: Path) -> int:
    """Private directories of this user's masters that no longer run."""
    removed = 0
    for entry in base.glob(f"{PRIVATE_PREFIX}*"):
        pid = entry.name[len(PRIVATE_PREFIX):]
        if not pid.isdigit() or entry.is_symlink() or not entry.is_dir():
            continue
        if entry.stat().st_uid != os.getuid() or _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    return removed
