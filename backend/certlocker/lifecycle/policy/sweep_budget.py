"""The rolling sweep's cursor and budget, as pure values (docs/decisions/0007-steady-sweep.md).

The sweep that repairs what the due index and the spec watch missed no longer reads the
whole inventory every hour in one burst: it visits a few certificates per tick, where a
shared cursor (kept in Vault by ``rolling_sweep``) says it stopped, as many as a budget
of Vault requests per minute allows. A pass over 100k certificates then takes hours,
but the load per minute is the same at 1k, 10k or 100k.

The budget is a token bucket kept in the cursor itself, so it is the deployment's, not
each replica's: credit grows at ``budget_per_minute / 60`` per second since the last
step (by any replica), capped at two ticks' worth (or a minute's) so a reconciler that was down does
not come back with a burst; each step spends what it asked of Vault. A step that asked
for more than it had (a long listing) leaves the credit negative and the next steps wait.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

#: Vault requests a visit to an idle, healthy certificate makes: its spec, its status,
#: its expiry-index entry and its due-index hint, and its leaf when the CA's renewal
#: window is to be asked (each one read; writes only to repair). Measured in
#: bench/bench_idle.py: 4 to 5.
REQUESTS_PER_VISIT = 5
#: Vault requests a step makes besides its visits: the cursor read and its write.
REQUESTS_PER_STEP = 2
#: credit is capped at this many ticks' worth of budget (and at least a minute's)
MAX_TICKS_OF_CREDIT = 2.0

Key = tuple[str, str, str]  # (environment, service, name): the sweep's order


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the sweep stands. ``after`` is the last certificate visited in the running
    pass (``()`` at the start of one, None between passes, when ``next_pass_at`` says when
    the next may start). ``credit`` is the budget left at ``stepped_at``, in requests."""

    after: Key | tuple[()] | None = None
    pass_started: dt.datetime | None = None
    next_pass_at: dt.datetime | None = None
    stepped_at: dt.datetime | None = None
    credit: float = 0.0
    visited: int = 0  # certificates visited in the running pass
    last_pass: int | None = None  # certificates the last finished pass visited
    last_pass_seconds: float | None = None
    passes: int = 0  # passes finished

    @property
    def running(self) -> bool:
        return self.after is not None

    def may_start(self, now: dt.datetime) -> bool:
        return not self.running and (self.next_pass_at is None or now >= self.next_pass_at)

    def begin(self, now: dt.datetime) -> Cursor:
        return dataclasses.replace(self, after=(), pass_started=now, next_pass_at=None,
                                   visited=0)

    def advance(self, last: Key | None, count: int, credit: float, now: dt.datetime,
                ) -> Cursor:
        """``count`` more certificates visited, the last of them ``last``."""
        return dataclasses.replace(self, after=last if last is not None else self.after,
                                   visited=self.visited + count, credit=credit,
                                   stepped_at=now)

    def finish(self, now: dt.datetime, min_pass: dt.timedelta) -> Cursor:
        """The pass reached the end: the next starts no sooner than ``min_pass`` after
        this one started (the old hourly sweep's pace, for small inventories)."""
        started = self.pass_started or now
        return dataclasses.replace(self, after=None, next_pass_at=started + min_pass,
                                   last_pass=self.visited,
                                   last_pass_seconds=(now - started).total_seconds(),
                                   passes=self.passes + 1)

    def to_json(self) -> dict[str, Any]:
        def when(t: dt.datetime | None) -> str | None:
            return t.isoformat() if t is not None else None
        return {"after": None if self.after is None else "/".join(self.after),
                "pass_started": when(self.pass_started),
                "next_pass_at": when(self.next_pass_at),
                "stepped_at": when(self.stepped_at), "credit": round(self.credit, 3),
                "visited": self.visited, "last_pass": self.last_pass,
                "last_pass_seconds": self.last_pass_seconds, "passes": self.passes}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> Cursor:
        """The stored cursor; a fresh one for nothing stored or a document that does not
        parse (the sweep then starts a new pass: repairs are idempotent)."""
        if not doc:
            return cls()
        try:
            after: Key | tuple[()] | None = None
            raw = doc.get("after")
            if raw == "":
                after = ()
            elif raw is not None:
                parts = str(raw).split("/")
                if len(parts) != 3:
                    raise ValueError("after")
                after = (parts[0], parts[1], parts[2])
            last_pass = doc.get("last_pass")
            seconds = doc.get("last_pass_seconds")
            return cls(after=after, pass_started=_time(doc.get("pass_started")),
                       next_pass_at=_time(doc.get("next_pass_at")),
                       stepped_at=_time(doc.get("stepped_at")),
                       credit=float(doc.get("credit") or 0.0),
                       visited=int(doc.get("visited") or 0),
                       last_pass=int(last_pass) if last_pass is not None else None,
                       last_pass_seconds=float(seconds) if seconds is not None else None,
                       passes=int(doc.get("passes") or 0))
        except (TypeError, ValueError):
            return cls()


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("naive time")
    return parsed


def credit(cursor: Cursor, now: dt.datetime, budget_per_minute: float,
           tick_seconds: float) -> float:
    """The requests the sweep may make now. A cursor never stepped gets a tick's worth
    (at least a minute's); a clock behind the last step's gets nothing more (never less)."""
    per_second = budget_per_minute / 60.0
    cap = per_second * max(tick_seconds * MAX_TICKS_OF_CREDIT, 60.0)
    if cursor.stepped_at is None:
        return per_second * max(tick_seconds, 60.0)
    elapsed = max(0.0, (now - cursor.stepped_at).total_seconds())
    return min(cap, cursor.credit + elapsed * per_second)


def visits(available: float) -> int:
    """How many certificates a step with ``available`` requests of credit visits."""
    return max(0, math.floor((available - REQUESTS_PER_STEP) / REQUESTS_PER_VISIT))


def spent(visited: int, lists: int) -> int:
    """The requests a step made: cursor read and write, its listings and its visits."""
    return REQUESTS_PER_STEP + lists + REQUESTS_PER_VISIT * visited


def pass_hours(inventory: int, budget_per_minute: float) -> float:
    """How long one pass over ``inventory`` certificates takes at the budget."""
    return inventory * REQUESTS_PER_VISIT / budget_per_minute / 60.0
