"""Maintenance windows: when a certificate may be rotated, and the override near expiry.

A window is a set of weekdays and a local time span in one IANA time zone::

    {"days": ["sat", "sun"], "start": "02:00", "end": "05:00", "timezone": "UTC"}

``days`` name the day each opening *starts* (a span whose end is not after its start
runs past midnight: ``22:00``-``02:00`` on ``fri`` is Friday 22:00 to Saturday 02:00).
``days`` left out means every day, ``timezone`` left out means UTC. Local times follow
the zone's daylight-saving rules (a start in the spring-forward gap opens at the first
valid instant after it, per ``zoneinfo``).

A window holds back rotation, never safety: ``hold`` says whether a reissue that is
needed now should wait for the next opening. It waits only while the certificate would
still have at least half of its renewal slack (``not_after`` minus the planned renewal
time) left when the window opens; past that, or once expired, it is issued at once (the
override). So a 90-day certificate (30 days of slack) waits for a weekly window unless
renewal has failed for 8 days; a 6-day one (48 h of slack) waits for a daily window but
never for a weekly one.

Windows per team or service: an administrator's Vault document at
``specs/_system/maintenance-windows`` (``paths.maintenance_windows``: under ``_system``
like the target allow-list, so the admin policy writes it, certlocker reads it, and no
team operator's ``specs/+/team-*`` reaches it) maps ``<env>/<service>`` keys to windows::

    {"windows": {"prod/payments-api": {...}, "prod/payments-*": {...}, "prod/*": {...}}}

A key's service part is a name, a prefix ending in ``*`` (a team's services, as the
team policies name them) or ``*`` alone. A certificate's own ``maintenance_window``
wins; otherwise the most specific key that matches (the exact service, then the longest
prefix). ``parse_defaults`` reads the document; one that does not parse is not applied
(``lifecycle.maintenance_defaults`` logs it and keeps none).

Pure: no I/O. ``parse`` is the one parser (used by ``specs`` for the spec field and by
any other document that carries a window), ``SCHEMA`` its JSON Schema.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from typing import Any, Mapping

from .errors import InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
FIELDS = ("days", "start", "end", "timezone")
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"
MAX_ZONE = 64
#: Fraction of the renewal slack that must be left when the window opens, or no waiting.
OVERRIDE_SLACK_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class MaintenanceWindow:
    days: tuple[str, ...]
    start: dt.time
    end: dt.time
    timezone: str = "UTC"

    def to_json(self) -> dict[str, Any]:
        return {"days": list(self.days), "start": self.start.strftime("%H:%M"),
                "end": self.end.strftime("%H:%M"), "timezone": self.timezone}

    def _zone(self) -> dt.tzinfo:
        return dt.timezone.utc if self.timezone == "UTC" else zoneinfo.ZoneInfo(self.timezone)

    def _openings(self, around: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        """The openings (start, end in UTC) that start from the day before ``around``
        (local) to 8 days after: every opening that can contain it, and the next one."""
        zone = self._zone()
        today = around.astimezone(zone).date()
        out = []
        for offset in range(-1, 9):
            day = today + dt.timedelta(days=offset)
            if DAYS[day.weekday()] not in self.days:
                continue
            end_day = day if self.end > self.start else day + dt.timedelta(days=1)
            start = dt.datetime.combine(day, self.start, tzinfo=zone)
            end = dt.datetime.combine(end_day, self.end, tzinfo=zone)
            out.append((start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)))
        return out

    def contains(self, at: dt.datetime) -> bool:
        """True when ``at`` is inside an opening (its start included, its end not)."""
        return self.opening(at) is not None

    def opening(self, at: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        """The opening (start, end in UTC) that ``at`` is inside, or None."""
        return next(((start, end) for start, end in self._openings(at)
                     if start <= at < end), None)

    def next_start(self, at: dt.datetime) -> dt.datetime:
        """The start of the first opening after ``at``."""
        return min(start for start, _ in self._openings(at) if start > at)


@dataclasses.dataclass(frozen=True)
class Hold:
    """The answer of ``hold``: wait until ``until`` (the next opening) or not; ``why``
    says which in an operator's words."""

    wait: bool
    until: dt.datetime | None
    why: str


def hold(window: MaintenanceWindow | None, now: dt.datetime, not_after: dt.datetime | None,
         renewal_at: dt.datetime | None) -> Hold:
    """Should a reissue needed ``now`` wait for the next opening of ``window``?

    ``not_after`` and ``renewal_at`` are those of the certificate served now (None: there
    is none, and nothing to rotate: never held).
    """
    if window is None or not_after is None:
        return Hold(False, None, "no maintenance window")
    if window.contains(now):
        return Hold(False, None, "inside its maintenance window")
    opens = window.next_start(now)
    if now >= not_after:
        return Hold(False, opens, "outside its maintenance window, but the certificate "
                                  "has expired")
    slack = not_after - renewal_at if renewal_at is not None else not_after - now
    left_then = not_after - opens
    if left_then < slack * OVERRIDE_SLACK_FRACTION:
        return Hold(False, opens, f"outside its maintenance window, but waiting for it "
                                  f"({opens:%Y-%m-%d %H:%M} UTC) would leave only "
                                  f"{_hours(left_then)} of validity")
    return Hold(True, opens, f"held for its maintenance window, which opens at "
                             f"{opens:%Y-%m-%d %H:%M} UTC")


def _hours(delta: dt.timedelta) -> str:
    return f"{max(delta, dt.timedelta(0)).total_seconds() / 3600:.1f} h"


def parse(field: str, value: Any) -> MaintenanceWindow | None:
    """A window from its JSON form (None stays None).

    :raises InvalidInput: naming the bad member (``<field>/days/1``) and why.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be an object with days, start, end and timezone")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"{field}/{unknown[0]}", "is not a known field of a window")
    days = value.get("days")
    if days is None:
        days = list(DAYS)
    if not isinstance(days, list) or not 1 <= len(days) <= len(DAYS):
        raise InvalidInput(f"{field}/days", f"must be a list of 1 to 7 of {', '.join(DAYS)}")
    seen = []
    for i, day in enumerate(days):
        if not isinstance(day, str) or day not in DAYS:
            raise InvalidInput(f"{field}/days/{i}", f"must be one of {', '.join(DAYS)}")
        if day in seen:
            raise InvalidInput(f"{field}/days/{i}", "is named twice")
        seen.append(day)
    start = _time(f"{field}/start", value.get("start"))
    end = _time(f"{field}/end", value.get("end"))
    if start == end:
        raise InvalidInput(f"{field}/end", "must differ from start (leave the window out "
                                           "for 'any time')")
    zone = value.get("timezone", "UTC")
    if (not isinstance(zone, str) or len(zone) > MAX_ZONE
            or not re.fullmatch(ZONE_PATTERN, zone)):
        raise InvalidInput(f"{field}/timezone", "must be an IANA time zone name such as "
                                                "UTC or Europe/Berlin")
    if zone != "UTC":
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise InvalidInput(f"{field}/timezone", "is not a time zone known here") from None
    return MaintenanceWindow(tuple(d for d in DAYS if d in seen), start, end, zone)


def _time(field: str, value: Any) -> dt.time:
    if not isinstance(value, str) or not re.fullmatch(TIME_PATTERN, value):
        raise InvalidInput(field, "must be a 24-hour time HH:MM")
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


#: The JSON Schema of a window (the rules ``parse`` enforces).
SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["start", "end"],
    "description": "when the certificate may be rotated; outside it a renewal waits for "
                   "the next opening unless that would leave less than half the renewal "
                   "slack (then it is issued at once)",
    "properties": {
        "days": {"type": "array", "minItems": 1, "maxItems": 7, "uniqueItems": True,
                 "items": {"type": "string", "enum": list(DAYS)},
                 "description": "the days an opening starts; default every day"},
        "start": {"type": "string", "pattern": TIME_PATTERN},
        "end": {"type": "string", "pattern": TIME_PATTERN,
                "description": "not after start: the opening runs past midnight"},
        "timezone": {"type": "string", "maxLength": MAX_ZONE, "pattern": ZONE_PATTERN,
                     "description": "an IANA time zone; default UTC"},
    },
}


#: ``<env>/<service>``, ``<env>/<prefix>*`` or ``<env>/*``
DEFAULT_KEY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}/([a-z0-9][a-z0-9-]{0,62}\*?|\*)$"
MAX_DEFAULTS = 1000


@dataclasses.dataclass(frozen=True)
class Defaults:
    """The windows of the administrator's document, by ``(env, service pattern)``."""

    windows: Mapping[tuple[str, str], MaintenanceWindow] = dataclasses.field(
        default_factory=dict)

    def for_service(self, environment: str, service: str) -> MaintenanceWindow | None:
        """The window of the most specific key matching ``environment``/``service``."""
        exact = self.windows.get((environment, service))
        if exact is not None:
            return exact
        best: tuple[int, MaintenanceWindow] | None = None
        for (env, pattern), window in self.windows.items():
            if env != environment or not pattern.endswith("*"):
                continue
            prefix = pattern[:-1]
            if service.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), window)
        return best[1] if best else None


NO_DEFAULTS = Defaults()


def parse_defaults(document: Any) -> Defaults:
    """The document at ``specs/_system/maintenance-windows``.

    :raises InvalidInput: naming the first bad key or member (``windows/prod~1api/end``).
    """
    if document is None:
        return NO_DEFAULTS
    if not isinstance(document, Mapping) or set(document) - {"windows"}:
        raise InvalidInput("", 'must be {"windows": {"<env>/<service>": window, ...}}')
    windows = document.get("windows") or {}
    if not isinstance(windows, Mapping) or len(windows) > MAX_DEFAULTS:
        raise InvalidInput("windows", f"must map at most {MAX_DEFAULTS} keys to windows")
    out: dict[tuple[str, str], MaintenanceWindow] = {}
    for key, value in windows.items():
        field = "windows/" + str(key).replace("~", "~0").replace("/", "~1")[:140]
        if not isinstance(key, str) or not re.fullmatch(DEFAULT_KEY_PATTERN, key):
            raise InvalidInput(field, "must be <env>/<service>, <env>/<prefix>* or <env>/*")
        window = parse(field, value)
        assert window is not None or value is None
        if window is not None:
            env, service = key.split("/")
            out[(env, service)] = window
    return Defaults(out)
