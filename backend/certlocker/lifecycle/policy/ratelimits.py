"""Rate-limit arithmetic: when may the next order go to a CA, how long will N take, and
when does a certificate go to the fallback issuer. Pure: callers pass the reservations
read from Vault and ``now``.

A limit is a *sliding* window: at most ``count`` orders in any interval of ``window``
(Let's Encrypt counts this way, and it is the strict reading: a fixed-window counter
lets ``2 * count`` through around a boundary). Reservations are points in time; a new
one at ``t`` is allowed when, with ``t`` inserted, no ``count + 1`` consecutive points
lie within less than ``window`` of each other. Future reservations (certificates
scheduled for later) count the same as past orders, so every scheduled certificate
holds its slot.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from typing import Iterable, Sequence

from ...errors import IssuanceFailed, RateLimited

#: ACME problem types (RFC 8555 section 6.7) after which another CA is worth trying
FALLBACK_CODES = ("connection", "serverInternal", "timeout")


@dataclasses.dataclass(frozen=True)
class Limit:
    """At most ``count`` orders in any ``window`` (the margin already added)."""

    count: int
    window: dt.timedelta

    def __post_init__(self) -> None:
        if self.count < 1 or self.window <= dt.timedelta(0):
            raise ValueError("a limit needs a positive count and window")


def fits(times: Sequence[dt.datetime], limit: Limit, t: dt.datetime) -> bool:
    """Would an order at ``t`` keep ``times`` (sorted) inside ``limit``?"""
    merged = list(times)
    k = bisect.bisect_right(merged, t)
    merged.insert(k, t)
    for i in range(max(0, k - limit.count), k + 1):
        j = i + limit.count
        if j < len(merged) and merged[j] - merged[i] < limit.window:
            return False
    return True


def earliest(times: Sequence[dt.datetime], limit: Limit, after: dt.datetime) -> dt.datetime:
    """The earliest moment at or after ``after`` an order fits ``limit`` given ``times``
    (sorted). Validity only begins where ``after`` is or where an earlier order leaves
    the window (``time + window``), so those are the only candidates."""
    candidates = [after] + sorted(t + limit.window for t in times if t + limit.window > after)
    for candidate in candidates:
        if fits(times, limit, candidate):
            return candidate
    # Past the last candidate every window has moved beyond every order.
    return max(candidates)  # pragma: no cover - the last candidate always fits


def earliest_all(constraints: Iterable[tuple[Sequence[dt.datetime], Limit]],
                 after: dt.datetime) -> dt.datetime:
    """The earliest moment at or after ``after`` that fits every (times, limit) pair."""
    pairs = list(constraints)
    at = after
    while True:
        latest = max((earliest(times, limit, at) for times, limit in pairs), default=at)
        if latest == at:
            return at
        at = latest


def schedule(accounts: Sequence[Sequence[dt.datetime]], limit: Limit | None, n: int,
             now: dt.datetime) -> list[tuple[int, dt.datetime]]:
    """Slots for ``n`` orders spread over ``accounts`` (each its sorted reservations):
    each order takes the account whose next slot is earliest (the lowest index on a tie),
    as ``reserve`` does. Returns (account index, time) per order, in order."""
    books = [list(times) for times in accounts] or [[]]
    slots: list[tuple[int, dt.datetime]] = []
    for _ in range(n):
        if limit is None:
            slots.append((len(slots) % len(books), now))
            continue
        options = [(earliest(book, limit, now), index) for index, book in enumerate(books)]
        at, index = min(options)
        bisect.insort(books[index], at)
        slots.append((index, at))
    return slots


def eta(accounts: Sequence[Sequence[dt.datetime]], limit: Limit | None, n: int,
        now: dt.datetime, per_certificate: dt.timedelta = dt.timedelta(0)) -> dt.datetime:
    """When ``n`` more certificates will have been issued: the last one's slot plus the
    time one issuance takes. ``now`` for none."""
    if n <= 0:
        return now
    return max(at for _, at in schedule(accounts, limit, n, now)) + per_certificate


def slack(not_after: dt.datetime | None, now: dt.datetime,
          fallback_after: dt.timedelta) -> dt.timedelta:
    """How long a certificate may wait for its issuer: ``fallback_after``, but never more
    than half the time its certificate in service has left (none: ``fallback_after``)."""
    if not_after is None:
        return fallback_after
    return max(dt.timedelta(0), min(fallback_after, (not_after - now) / 2))


def fallback_for_failure(error: IssuanceFailed, allowed: dt.timedelta) -> str | None:
    """Why the fallback issuer should take over after the primary failed with ``error``,
    or None when it should not (the failure is the request's, not the CA's, or a
    ``rateLimited`` whose Retry-After fits in ``allowed``)."""
    if isinstance(error, RateLimited):
        wait = _as_delta(error.retry_after)
        if wait is None:
            return "the CA answered rateLimited without a Retry-After"
        if wait > allowed:
            return (f"the CA answered rateLimited with Retry-After {_human(wait)}, beyond "
                    f"the {_human(allowed)} the certificate can wait")
        return None
    if error.acme_code in FALLBACK_CODES:
        return f"the primary failed: {error.acme_code}: {error.detail[:200]}"
    return None


def fallback_for_wait(wait: dt.timedelta, allowed: dt.timedelta) -> str | None:
    """Why the fallback should take over when the primary's own limits put the next slot
    ``wait`` away, or None when the certificate can wait that long."""
    if wait <= allowed:
        return None
    return (f"the primary's rate limit is exhausted: its next slot is in {_human(wait)}, "
            f"beyond the {_human(allowed)} the certificate can wait")


def _as_delta(value: dt.timedelta | float | None) -> dt.timedelta | None:
    if value is None:
        return None
    return value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=float(value))


def _human(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
