"""When to renew a certificate: a pure function of its validity and the policy.

Order of precedence, the same one cert-manager and ACME clients converge on:

1. An ACME Renewal Information window (RFC 9773) from the CA: a uniformly random moment
   inside it. The CA uses ARI to spread load and to pull renewals forward before a
   mass revocation, so it replaces the default. An explicit ``renew_before`` still
   applies as a *latest* time: we renew at the earlier of the two, so neither the
   operator's margin nor the CA's request is ignored.
2. ``renew_before`` from the spec: a duration before ``not_after`` ("720h", "30d",
   "1h30m") or a fraction of the lifetime left ("0.5", "50%").
3. The default: when one third of the lifetime is left (a 90-day certificate at 30 days
   left, a 47-day one at 15 d 16 h, a 6-day one at 2 days).

A ``renew_before`` at least as long as the lifetime would make every fresh certificate
due at issuance, an endless reissue loop. Like cert-manager, such a value falls back to
the default (one third of the lifetime left) and the plan says so.

All datetimes are timezone-aware UTC; results are truncated to whole seconds so they
round-trip through RFC 3339 status records unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from ...errors import InvalidInput
from ...renew_before import MAX_DURATION, Duration, Fraction, parse_renew_before

__all__ = ["MAX_DURATION", "Duration", "Fraction", "RenewalPlan", "is_due", "parse_renew_before",
           "plan_renewal", "renewal_time"]

DEFAULT_FRACTION_LEFT = 1 / 3


@dataclasses.dataclass(frozen=True)
class RenewalPlan:
    """The chosen renewal time and where it came from, for status and operators.

    ``source`` is one of ``default``, ``renew-before``, ``renew-before-clamped``, ``ari``,
    ``ari-past`` (the window has already closed: renew now).
    """

    at: dt.datetime
    source: str
    explanation_url: str | None = None


def plan_renewal(
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    renew_before: str | None = None,
    ari_window: tuple[dt.datetime, dt.datetime] | None = None,
    ari_explanation_url: str | None = None,
    now: dt.datetime | None = None,
    rng: random.Random | None = None,
) -> RenewalPlan:
    """Choose when to renew; see the module docstring for the rules.

    ``ari_window`` is the CA's ``suggestedWindow`` (start, end). A window whose end is
    before its start is malformed and ignored (RFC 9773 section 4.2). When ``now`` is
    given and the window has already ended, the plan is ``now`` ("renew immediately").
    ``rng`` picks the moment inside the window; pass a seeded one in tests.

    :raises InvalidInput: if ``renew_before`` does not parse, or ``not_after`` is not
        after ``not_before``.
    """
    lifetime = not_after - not_before
    if lifetime <= dt.timedelta(0):
        raise InvalidInput("not_after", "must be after not_before")

    policy_plan = _policy_plan(not_before, not_after, renew_before)

    if ari_window is not None:
        start, end = ari_window
        if end >= start:
            if now is not None and end <= now:
                return RenewalPlan(_seconds(now), "ari-past", ari_explanation_url)
            picker = rng or random.Random()
            span = (end - start).total_seconds()
            chosen = start + dt.timedelta(seconds=picker.uniform(0, span))
            if renew_before is not None and policy_plan.at < chosen:
                return policy_plan
            return RenewalPlan(_seconds(chosen), "ari", ari_explanation_url)
    return policy_plan


def renewal_time(
    not_before: dt.datetime,
    not_after: dt.datetime,
    *,
    renew_before: str | None = None,
    ari_window: tuple[dt.datetime, dt.datetime] | None = None,
    now: dt.datetime | None = None,
    rng: random.Random | None = None,
) -> dt.datetime:
    """The moment renewal becomes due; ``plan_renewal(...).at``.

    :raises InvalidInput: as ``plan_renewal``.
    """
    return plan_renewal(not_before, not_after, renew_before=renew_before,
                        ari_window=ari_window, now=now, rng=rng).at


def is_due(now: dt.datetime, renewal_at: dt.datetime) -> bool:
    """True once ``now`` has reached the renewal time."""
    return now >= renewal_at


def _policy_plan(not_before: dt.datetime, not_after: dt.datetime,
                 renew_before: str | None) -> RenewalPlan:
    lifetime = not_after - not_before
    default = RenewalPlan(_seconds(not_after - lifetime * DEFAULT_FRACTION_LEFT), "default")
    if renew_before is None:
        return default
    parsed = parse_renew_before(renew_before)
    if isinstance(parsed, Fraction):
        return RenewalPlan(_seconds(not_after - lifetime * parsed.value), "renew-before")
    if parsed.value >= lifetime:
        return dataclasses.replace(default, source="renew-before-clamped")
    return RenewalPlan(_seconds(not_after - parsed.value), "renew-before")


def _seconds(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)
