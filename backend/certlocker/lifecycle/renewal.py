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
import re

from ..errors import InvalidInput

DEFAULT_FRACTION_LEFT = 1 / 3
_FIELD = "renew_before"
_MAX_INPUT = 64
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[dhms])+$")
_NUMBER = re.compile(r"^\d*\.?\d+$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_DURATION = dt.timedelta(days=3650)


@dataclasses.dataclass(frozen=True)
class Duration:
    """Renew this long before ``not_after``."""

    value: dt.timedelta


@dataclasses.dataclass(frozen=True)
class Fraction:
    """Renew when this fraction (0 < value < 1) of the lifetime is left."""

    value: float


@dataclasses.dataclass(frozen=True)
class RenewalPlan:
    """The chosen renewal time and where it came from, for status and operators.

    ``source`` is one of ``default``, ``renew-before``, ``renew-before-clamped``, ``ari``,
    ``ari-past`` (the window has already closed: renew now).
    """

    at: dt.datetime
    source: str
    explanation_url: str | None = None


def parse_renew_before(value: str) -> Duration | Fraction:
    """Parse a spec's ``renew_before``.

    Durations are one or more ``<number><unit>`` parts with units d, h, m, s
    ("720h", "30d", "90m", "1h30m", "1.5h"). Fractions are a bare number strictly
    between 0 and 1 ("0.33") or a percentage strictly between 0 and 100 ("50%").

    :raises InvalidInput: field ``renew_before``, for anything else, including a bare
        number of 1 or more (a missing unit, most likely) and zero.
    """
    if not isinstance(value, str):
        raise InvalidInput(_FIELD, "must be a string such as '30d', '720h' or '0.33'")
    text = value.strip().lower()
    if not text:
        raise InvalidInput(_FIELD, "must not be empty")
    if len(text) > _MAX_INPUT:
        raise InvalidInput(_FIELD, f"must be at most {_MAX_INPUT} characters")
    if text.endswith("%"):
        number = text[:-1].strip()
        if not _NUMBER.match(number):
            raise InvalidInput(_FIELD, "a percentage must be a number followed by '%'")
        percent = float(number)
        if not 0 < percent < 100:
            raise InvalidInput(_FIELD, "a percentage must be between 0% and 100%, exclusive")
        return Fraction(percent / 100)
    if _NUMBER.match(text):
        fraction = float(text)
        if not 0 < fraction < 1:
            raise InvalidInput(
                _FIELD,
                "a bare number is a fraction of the lifetime and must be between 0 and 1; "
                "for a duration add a unit (d, h, m, s), e.g. '30d'")
        return Fraction(fraction)
    if _DURATION.match(text):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        if seconds <= 0:
            raise InvalidInput(_FIELD, "a duration must be longer than zero")
        # Checked as a number: a timedelta of 10^60 days overflows instead of refusing.
        if seconds > MAX_DURATION.total_seconds():
            raise InvalidInput(_FIELD, "a duration must be at most 3650d")
        return Duration(dt.timedelta(seconds=seconds))
    raise InvalidInput(
        _FIELD, "must be a duration such as '30d', '720h', '1h30m' or a fraction such as "
                "'0.33' or '33%'")


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
