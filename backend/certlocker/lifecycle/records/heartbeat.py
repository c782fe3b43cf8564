"""Reconciler heartbeats: is anything renewing certificates right now?

A reconciler that died or hangs fails silently: nothing is renewed, and the first sign
is an expiry alert weeks later. So each reconciler process records in Vault when it last
finished a tick and a full sweep (``system/reconcilers/<host>-<pid>``), and the API
exports those times (``/metrics``) for an alert on "no reconciler has ticked lately".
The record also carries the process's failure counts since it started (``FAILURE_KINDS``):
the reconciler serves no ``/metrics`` of its own, so this is how they reach one.
Records of processes gone for a week are removed by the next sweep of any reconciler.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import socket
from typing import Any, Mapping

from ...clock import Clock, SystemClock, parse_rfc3339, rfc3339
from ...errors import CertlockerError, InvalidInput
from ..ports import Store

log = logging.getLogger(__name__)

FORGET_AFTER = dt.timedelta(days=7)
#: What a reconciler counts: issuance attempts that failed, certificates whose handling
#: broke, alerts no channel accepted, ticks that failed (Vault away, or anything else).
FAILURE_KINDS = ("issuance", "certificate", "alert-delivery", "vault-unavailable", "tick")


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    name: str
    started_at: dt.datetime
    last_tick_at: dt.datetime
    last_sweep_at: dt.datetime | None
    failures: dict[str, int] = dataclasses.field(default_factory=dict)  # kind -> count


def process_name() -> str:
    """``<host>-<pid>``, reduced to a path component (lowercase letters, digits, '-')."""
    host = re.sub(r"[^a-z0-9]+", "-", socket.gethostname().lower())[:40].strip("-")
    return f"{host or 'host'}-{os.getpid()}"


class Heartbeats:
    def __init__(self, store: Store, clock: Clock | None = None,
                 name: str | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self.name = name or process_name()
        self._started_at = self._clock.now()
        self._last_sweep_at: dt.datetime | None = None

    def beat(self, swept: bool = False, failures: Mapping[str, int] | None = None) -> None:
        """Record a finished tick (and sweep, if ``swept``) and the process's failure
        counts so far. A failure is logged, never raised: the heartbeat must not stop the
        work it reports on."""
        now = self._clock.now()
        if swept:
            self._last_sweep_at = now
        document = {"name": self.name, "started_at": rfc3339(self._started_at),
                    "last_tick_at": rfc3339(now),
                    "last_sweep_at": rfc3339(self._last_sweep_at)
                    if self._last_sweep_at else None,
                    "failures": {k: int(v) for k, v in (failures or {}).items()}}
        try:
            self._store.write_json(self._store.paths.reconciler_heartbeat(self.name),
                                   document, cas=None)
        except CertlockerError as exc:
            log.warning("reconcile.heartbeat_failed", extra={"error": type(exc).__name__})

    def forget_departed(self) -> None:
        """Remove records whose process has not ticked for ``FORGET_AFTER``."""
        cutoff = self._clock.now() - FORGET_AFTER
        try:
            for beat in recorded(self._store):
                if beat.last_tick_at < cutoff and beat.name != self.name:
                    self._store.destroy(self._store.paths.reconciler_heartbeat(beat.name))
        except CertlockerError as exc:
            log.warning("reconcile.heartbeat_tidy_failed", extra={"error": type(exc).__name__})


def recorded(store: Store, since: dt.datetime | None = None) -> list[Heartbeat]:
    """Every recorded reconciler (that ticked ``since``, if given), newest tick first;
    unreadable records are skipped."""
    found = []
    for name in store.list(store.paths.reconciler_heartbeats_dir()):
        try:
            path = store.paths.reconciler_heartbeat(name)
        except InvalidInput:
            continue  # not written by a reconciler
        beat = _parse(store.read_json(path)[0])
        if beat is not None and (since is None or beat.last_tick_at >= since):
            found.append(beat)
    return sorted(found, key=lambda b: b.last_tick_at, reverse=True)


def _parse(doc: dict[str, Any] | None) -> Heartbeat | None:
    if not isinstance(doc, dict):
        return None
    try:
        sweep = doc.get("last_sweep_at")
        counts = doc.get("failures")
        failures = {str(k): v for k, v in counts.items() if type(v) is int and v >= 0} \
            if isinstance(counts, dict) else {}
        return Heartbeat(name=str(doc["name"]), started_at=parse_rfc3339(doc["started_at"]),
                         last_tick_at=parse_rfc3339(doc["last_tick_at"]),
                         last_sweep_at=parse_rfc3339(sweep) if sweep else None,
                         failures=failures)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
