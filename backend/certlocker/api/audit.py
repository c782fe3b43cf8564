"""GET /v1/audit: the audit trail, filtered, newest first.

Who may read it is Vault's decision: the caller's token must hold ``read`` on an audit
event's path (``<mount>/data/audit/events/<seq>``; auditors and admins do), checked with
``sys/capabilities-self``. The events are then read with certlocker's own token, which
also reads the head hint under ``system/``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..lifecycle import access
from ..clock import parse_rfc3339, rfc3339
from ..errors import InvalidInput
from .context import authenticate_first, require, services

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")
authenticate_first(bp)
MAX_LIMIT = 1000
_TEXT_FILTERS = ("certificate", "actor", "action")


def _text(name: str) -> str | None:
    value = request.args.get(name)
    if value is None:
        return None
    if not value or len(value) > 256 or not value.isprintable():
        raise InvalidInput(name, "must be a printable string of 1 to 256 characters")
    return value


def _time(name: str) -> dt.datetime | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        parsed = parse_rfc3339(value) if len(value) <= 64 else None
        if parsed is not None and parsed.tzinfo is not None:
            # 0001-01-01T00:00:00+01:00 is before year 1 in UTC: refused, not a 500 later
            parsed = parsed.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidInput(name, "must be an RFC 3339 time with a zone, e.g. "
                                 "2030-01-31T12:00:00Z")
    return parsed


def _limit() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return 100
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _authorize() -> str:
    """:raises AccessDenied: the caller's token may not read audit events."""
    paths = services().store.paths
    return require(paths.api_path(paths.audit_event(1)), access.READ, action="audit.query",
                   subject="audit", what="read the audit trail").display_name


@bp.get("")
def index() -> Response:
    filters: dict[str, Any] = {name: _text(name) for name in _TEXT_FILTERS}
    filters["since"] = _time("since")
    filters["until"] = _time("until")
    if filters["since"] and filters["until"] and filters["since"] > filters["until"]:
        raise InvalidInput("since", "must not be after until")
    limit = _limit()
    _authorize()
    events = services().audit.query(limit=limit, **filters)
    return jsonify({
        "items": [e.to_view() for e in events],
        "limit": limit,
        "filters": {k: (rfc3339(v) if isinstance(v, dt.datetime) else v)
                    for k, v in filters.items() if v is not None},
    })
