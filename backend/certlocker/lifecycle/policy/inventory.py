"""The inventory query behind ``GET /v1/certificates``: filters and pages, pure.

``parse_query`` turns query parameters into a ``Query`` (raising ``InvalidInput`` that
names the bad parameter); ``page`` walks certificate refs in a stable order (environment,
service, name), loads only as many views as the page needs, and returns the items with
a cursor: the id of the last item, so a page boundary stays put while certificates are
added or removed elsewhere in the inventory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Callable, Generic, Iterable, Mapping, Protocol, Sequence, TypeVar

from ... import names
from ...errors import InvalidInput
from ...models import CertificateRef, CertificateSpec, CertificateStatus, State
from .shown import matches_state

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_DURATION = dt.timedelta(days=3650)
PARAMETERS = ("environment", "service", "status", "issuer", "expiring_within", "limit",
              "cursor", "offset", "q")
MAX_TEXT = 253  # the longest DNS name
_DURATION_PART = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ISSUER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ViewLike(Protocol):
    """What ``matches`` reads: ``lifecycle.service.CertificateView`` has this shape."""

    @property
    def spec(self) -> CertificateSpec: ...

    @property
    def status(self) -> CertificateStatus: ...


V = TypeVar("V", bound=ViewLike)


@dataclasses.dataclass(frozen=True)
class Query:
    environment: str | None = None
    service: str | None = None
    status: State | None = None
    issuer: str | None = None
    expiring_within: dt.timedelta | None = None
    limit: int = DEFAULT_LIMIT
    cursor: CertificateRef | None = None
    offset: int = 0
    text: str | None = None  # ``q``: part of the id or of a DNS name, any case


@dataclasses.dataclass(frozen=True)
class Page(Generic[V]):
    items: list[V]
    next_cursor: str | None


def parse_duration(field: str, raw: str) -> dt.timedelta:
    """``"720h"``, ``"30d"``, ``"1d12h"``, ``"90m"``, ``"2w"``, ``"3600s"``.

    :raises InvalidInput: naming ``field`` when it is not such a duration, is zero, or
        is longer than ten years.
    """
    pos, seconds = 0, 0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != pos:
            break
        seconds += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not raw or pos != len(raw):
        raise InvalidInput(field, "must be a duration such as 720h, 30d or 1d12h "
                                  "(units s, m, h, d, w)")
    # Compared as a number first: a timedelta of billions of weeks overflows (a 500).
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise InvalidInput(field, "must be more than 0s and at most 3650d")
    return dt.timedelta(seconds=seconds)


def parse_query(args: Mapping[str, str]) -> Query:
    """Validate query parameters.

    :raises InvalidInput: naming the first unknown or invalid parameter.
    """
    for key in args:
        if key not in PARAMETERS:
            raise InvalidInput(key[:64], "is not a known query parameter (known: "
                               + ", ".join(PARAMETERS) + ")")
    status = None
    if args.get("status") is not None:
        try:
            status = State(args["status"])
        except ValueError:
            raise InvalidInput("status", "must be one of "
                               + ", ".join(s.value for s in State)) from None
    issuer = args.get("issuer")
    if issuer is not None and not _ISSUER.match(issuer):
        raise InvalidInput("issuer", "must be an issuer name (letters, digits, '_', '.', '-')")
    expiring = args.get("expiring_within")
    cursor = args.get("cursor")
    if cursor is not None and "offset" in args:
        raise InvalidInput("cursor", "use either cursor or offset, not both")
    text = args.get("q")
    if text is not None and (not 0 < len(text) <= MAX_TEXT or not text.isprintable()):
        raise InvalidInput("q", f"must be printable text of 1 to {MAX_TEXT} characters")
    return Query(
        text=text.strip().lower() or None if text is not None else None,
        environment=_component("environment", args.get("environment")),
        service=_component("service", args.get("service")),
        status=status,
        issuer=issuer,
        expiring_within=parse_duration("expiring_within", expiring) if expiring is not None
        else None,
        limit=_bounded_int("limit", args.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT),
        cursor=_cursor(cursor) if cursor is not None else None,
        offset=_bounded_int("offset", args.get("offset"), 0, 0, 10**9),
    )


def matches(view: ViewLike, query: Query, now: dt.datetime) -> bool:
    """Does one certificate pass every filter of ``query``? (Environment and service are
    also applied here, so a caller that could not narrow the listing stays correct.)"""
    spec, status = view.spec, view.status
    if query.environment and spec.ref.environment != query.environment:
        return False
    if query.service and spec.ref.service != query.service:
        return False
    if query.status and not matches_state(status, query.status, now):
        return False
    if query.issuer and spec.issuer != query.issuer:
        return False
    if query.text and not any(query.text in s.lower()
                              for s in (spec.ref.id, *spec.dns_names)):
        return False
    if query.expiring_within is not None:
        if status.current is None or status.current.not_after > now + query.expiring_within:
            return False
    return True


def page(refs: Iterable[CertificateRef],
         load_many: Callable[[list[CertificateRef]], Sequence[V | None]],
         query: Query, now: dt.datetime, chunk: int = 32) -> Page[V]:
    """One page of the views that match ``query``, in (environment, service, name) order.

    ``load_many`` reads views a chunk at a time (concurrently, in the API); a
    certificate removed between listing and reading, or one the caller may not read,
    comes back as None and is skipped. ``next_cursor`` is None on the last page.
    """
    after = _key(query.cursor) if query.cursor else None
    pending = [ref for ref in sorted(set(refs), key=_key) if after is None or _key(ref) > after]
    items: list[V] = []
    skipped = 0
    for start in range(0, len(pending), chunk):
        for view in load_many(pending[start:start + chunk]):
            if view is None or not matches(view, query, now):
                continue
            if skipped < query.offset:
                skipped += 1
                continue
            if len(items) == query.limit:
                return Page(items, items[-1].spec.ref.id)
            items.append(view)
    return Page(items, None)


def _key(ref: CertificateRef) -> tuple[str, str, str]:
    return (ref.environment, ref.service, ref.name)


def _component(field: str, value: str | None) -> str | None:
    return None if value is None else names.component(field, value)


def _cursor(raw: str) -> CertificateRef:
    parts = raw.split(".")
    if len(parts) != 3:
        raise InvalidInput("cursor", "must be the next_cursor of a previous page")
    try:
        return CertificateRef(*(names.component(f, p) for f, p in
                                zip(("environment", "service", "name"), parts, strict=True)))
    except InvalidInput:
        raise InvalidInput("cursor", "must be the next_cursor of a previous page") from None


def _bounded_int(field: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidInput(field, f"must be an integer from {low} to {high}")
    return int(raw)
