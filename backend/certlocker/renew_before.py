"""A spec's ``renew_before``: a duration before ``not_after`` or a fraction of the
lifetime left. Parsed here, in the domain, by the spec parser (``specs``) and by the
renewal plan (``lifecycle.renewal``) alike. Pure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from .errors import InvalidInput

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
