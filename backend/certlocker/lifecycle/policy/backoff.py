"""When to retry after a failed issuance, and when to stop retrying quietly and alert.

Exponential backoff with jitter (so a CA outage does not turn every replica's retries
into one synchronized wave), scaled to the certificate's lifetime: a 6-day certificate
cannot wait 32 hours between attempts, so each delay is capped at ``lifetime_fraction``
of the lifetime as well as at an absolute maximum.

The retries must also fit in the slack that is left: given the current certificate's
``not_after``, each delay is capped at ``remaining_fraction`` of the validity left, so
no retry is ever planned at or past expiry and the attempts grow denser as expiry nears
(a 6-day certificate renewed at day 4 with 48 h left waits at most 7.2 h, then at most
6 h with 24 h left, 15 min with 1 h left). Once the certificate has expired the lifetime
cap alone applies: there is no deadline left to fit in.

Two jitter modes, from the AWS Architecture Blog "Exponential Backoff and Jitter":

- ``full``: uniform between the base delay and ``base * 2**(attempts-1)`` (capped). The
  lower bound is the base, not zero, so a flapping CA is never retried back-to-back.
- ``decorrelated``: uniform between the base and three times the previous delay (capped);
  needs the previous delay, and falls back to ``full`` without it.

A CA's Retry-After (RFC 8555 section 6.6: ``rateLimited`` errors; section 7.4 polling)
is a floor: the next attempt is never earlier than it, even past the cap and even past
expiry (the CA would refuse an earlier attempt anyway; an alert tells a human then).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

FULL = "full"
DECORRELATED = "decorrelated"


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    base: dt.timedelta = dt.timedelta(minutes=5)
    max_delay: dt.timedelta = dt.timedelta(hours=12)
    lifetime_fraction: float = 1 / 20
    jitter: str = FULL
    #: no wait is longer than this fraction of the validity left (``not_after - now``)
    remaining_fraction: float = 1 / 4

    def __post_init__(self) -> None:
        if self.jitter not in (FULL, DECORRELATED):
            raise ValueError(f"jitter must be {FULL!r} or {DECORRELATED!r}")
        if self.base <= dt.timedelta(0) or self.max_delay <= dt.timedelta(0):
            raise ValueError("base and max_delay must be positive")
        if not 0 < self.lifetime_fraction <= 1:
            raise ValueError("lifetime_fraction must be in (0, 1]")
        if not 0 < self.remaining_fraction < 1:
            raise ValueError("remaining_fraction must be in (0, 1)")


DEFAULT_POLICY = BackoffPolicy()


def cap(lifetime: dt.timedelta, policy: BackoffPolicy = DEFAULT_POLICY, *,
        remaining: dt.timedelta | None = None) -> dt.timedelta:
    """The longest delay allowed for a certificate of this lifetime with ``remaining``
    validity left (None: no certificate yet, or ignore it; not positive: expired)."""
    ceiling = min(policy.max_delay, lifetime * policy.lifetime_fraction)
    if remaining is not None and remaining > dt.timedelta(0):
        ceiling = min(ceiling, remaining * policy.remaining_fraction)
    return ceiling


def delay(
    attempts: int,
    lifetime: dt.timedelta,
    rng: random.Random,
    *,
    previous: dt.timedelta | None = None,
    policy: BackoffPolicy = DEFAULT_POLICY,
    remaining: dt.timedelta | None = None,
) -> dt.timedelta:
    """The wait after ``attempts`` consecutive failures (0 means none: no wait), with
    ``remaining`` validity left on the current certificate (see ``cap``)."""
    if attempts <= 0:
        return dt.timedelta(0)
    ceiling = cap(lifetime, policy, remaining=remaining).total_seconds()
    floor = min(policy.base.total_seconds(), ceiling)
    if policy.jitter == DECORRELATED and previous is not None:
        upper = min(ceiling, max(floor, previous.total_seconds() * 3))
    else:
        # In float seconds: base * 2**attempts overflows timedelta long before any cap.
        upper = min(ceiling, policy.base.total_seconds() * 2.0 ** min(attempts - 1, 64))
    seconds = rng.uniform(floor, max(floor, upper))
    # Whole seconds (status records are RFC 3339), rounded down so the cap holds; at
    # least one second, so a certificate about to expire is not retried in a hot loop.
    return dt.timedelta(seconds=max(1, int(seconds)))


def next_attempt(
    attempts: int,
    now: dt.datetime,
    lifetime: dt.timedelta,
    rng: random.Random,
    *,
    retry_after: dt.datetime | dt.timedelta | float | None = None,
    previous: dt.timedelta | None = None,
    policy: BackoffPolicy = DEFAULT_POLICY,
    not_after: dt.datetime | None = None,
) -> dt.datetime:
    """When to try again after ``attempts`` consecutive failures.

    ``not_after`` is the current certificate's expiry, if there is one: the wait is
    capped at ``remaining_fraction`` of the time left, so the attempt is planned before
    it. ``retry_after`` is the CA's Retry-After: an absolute time, a delay, or seconds
    (as ``errors.RateLimited.retry_after`` carries it). The result is never earlier.
    """
    remaining = not_after - now if not_after is not None else None
    at = now + delay(attempts, lifetime, rng, previous=previous, policy=policy,
                     remaining=remaining)
    if retry_after is None:
        return at
    if isinstance(retry_after, dt.datetime):
        floor_at = retry_after
    elif isinstance(retry_after, dt.timedelta):
        floor_at = now + retry_after
    else:
        floor_at = now + dt.timedelta(seconds=float(retry_after))
    return max(at, floor_at)


def exhausted(
    attempts: int,
    now: dt.datetime,
    not_after: dt.datetime | None,
    max_attempts: int,
    expiry_floor: dt.timedelta,
) -> bool:
    """True when it is time to alert a human.

    That is when ``max_attempts`` consecutive failures have happened, or when the
    current certificate (if any) expires within ``expiry_floor`` whatever the attempt
    count: the floor is the safety net for a renewal that never even started. Retries
    go on either way; this only decides the alert.
    """
    if attempts >= max_attempts:
        return True
    return not_after is not None and not_after - now <= expiry_floor
