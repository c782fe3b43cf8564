"""The rolling sweep: a bounded slice of the inventory per tick, from a cursor in Vault.

Each ``step`` reads the shared cursor (``system/sweep/cursor``), works out from the
budget (``policy.sweep_budget``) how many certificates it may visit, finds the next ones
after the cursor in ``specs/`` order, and claims them by writing the advanced cursor with
check-and-set. Of two replicas stepping at once one wins and the other visits nothing
this tick, so a slice is visited once, and any replica carries on where another stopped.
The caller then visits the claimed certificates (``Reconciler.handle`` with
``sweeping=True``). A replica that dies after claiming leaves its slice to the next pass:
the sweep is the safety net behind the due index and the spec watch, not their
replacement.

Listings: the environments and each environment's services are listed once per pass
and kept (a folder's LIST walks every key below it, about 150 ms at 100k: paid once a
pass, not once a tick); the names of the service being walked are kept while the
cursor is in it. See docs/decisions/0007-steady-sweep.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from ..clock import Clock, SystemClock
from ..errors import Conflict
from ..models import CertificateRef
from .policy import sweep_budget
from .policy.sweep_budget import Cursor, Key
from .ports import Store

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    """What one step claimed: the certificates to visit, and whether it began or ended
    a pass (``cursor`` is the one written, None when nothing was claimed)."""

    refs: tuple[CertificateRef, ...] = ()
    began: bool = False
    finished: bool = False
    cursor: Cursor | None = None
    requests: int = 1  # Vault requests the step made (an idle step: the cursor read)


class RollingSweep:
    def __init__(self, store: Store, *, budget_per_minute: float,
                 min_pass: dt.timedelta = dt.timedelta(hours=1),
                 clock: Clock | None = None) -> None:
        """``budget_per_minute``: Vault requests per minute the sweep may make across
        every replica. ``min_pass``: a pass starts no sooner than this after the last
        one started, so a small inventory is swept at the old hourly pace."""
        if budget_per_minute <= 0:
            raise ValueError("the rolling sweep needs a positive budget")
        self._store = store
        self.budget_per_minute = budget_per_minute
        self.min_pass = min_pass
        self._clock = clock or SystemClock()
        self._pass: dt.datetime | None = None  # the pass the listings below belong to
        self._envs: list[str] | None = None
        self._services: dict[str, list[str]] = {}
        self._names: tuple[tuple[str, str], list[str]] | None = None

    @property
    def path(self) -> str:
        return self._store.paths.sweep_cursor()

    def cursor(self) -> Cursor:
        return Cursor.from_json(self._store.read_json(self.path)[0])

    def step(self, tick_seconds: float, *, start: bool = False) -> Step:
        """Claim the next slice. ``start``: begin a pass now if none is running, even
        before ``min_pass`` is over (a reconciler's start: what was written while none
        ran is looked at without waiting for the next pass).

        :raises VaultUnavailable: Vault cannot be reached; nothing was claimed.
        """
        doc, version = self._store.read_json(self.path)
        cursor = Cursor.from_json(doc)
        now = self._clock.now()
        began = False
        if not cursor.running:
            if not (start or cursor.may_start(now)):
                return Step()
            cursor, began = cursor.begin(now), True
        available = sweep_budget.credit(cursor, now, self.budget_per_minute, tick_seconds)
        wanted = sweep_budget.visits(available)
        if wanted <= 0 and not began:
            return Step()
        assert cursor.after is not None
        keys, exhausted, lists = self._next(cursor, wanted)
        refs = tuple(CertificateRef(*k) for k in keys)
        used = sweep_budget.spent(len(refs), lists)
        claimed = cursor.advance(keys[-1] if keys else None, len(refs), available - used, now)
        if exhausted:
            claimed = claimed.finish(now, self.min_pass)
        try:
            self._store.write_json(self.path, claimed.to_json(), cas=version)
        except Conflict:
            # Another replica stepped meanwhile: the slice is theirs. Visit nothing.
            return Step(requests=used)
        return Step(refs, began=began, finished=exhausted, cursor=claimed, requests=used)

    # -- the walk in specs/ order ------------------------------------------------------
    def _next(self, cursor: Cursor, wanted: int) -> tuple[list[Key], bool, int]:
        """Up to ``wanted`` keys after the cursor; whether the walk reached the end; how
        many LIST requests it made."""
        if cursor.pass_started != self._pass:
            self._pass, self._envs, self._services, self._names = (
                cursor.pass_started, None, {}, None)
        after = cursor.after or None
        lists = 0
        found: list[Key] = []
        paths = self._store.paths
        if self._envs is None:
            self._envs = _folders(self._store.list(paths.specs_dir()))
            lists += 1
        for env in self._envs:
            if after is not None and env < after[0]:
                continue
            if env not in self._services:
                self._services[env] = _folders(self._store.list(paths.specs_dir(env)))
                lists += 1
            for svc in self._services[env]:
                if after is not None and (env, svc) < after[:2]:
                    continue
                if self._names is None or self._names[0] != (env, svc):
                    self._names = ((env, svc), _names(self._store.list(
                        paths.specs_dir(env, svc))))
                    lists += 1
                for name in self._names[1]:
                    key = (env, svc, name)
                    if after is not None and key <= after:
                        continue
                    if len(found) >= wanted:
                        return found, False, lists
                    found.append(key)
        return found, True, lists


def _folders(listed: list[str]) -> list[str]:
    # '_' entries are administrators' documents (specs/_system/...), never certificates.
    return sorted(e.rstrip("/") for e in listed if e.endswith("/") and not e.startswith("_"))


def _names(listed: list[str]) -> list[str]:
    return sorted(n for n in listed if not n.endswith("/") and not n.startswith("_"))
