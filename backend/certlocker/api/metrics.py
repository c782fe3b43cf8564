"""GET /metrics: Prometheus text format. It holds no secret but names every team's
certificates and target addresses, so with ``metrics_token`` set a scrape must present
it as ``Authorization: Bearer <token>`` (a 401 problem otherwise); without it the
endpoint is open, like /healthz."""

from __future__ import annotations

import datetime as dt
import hmac

from flask import Blueprint, Flask, Response, current_app, request

from ..clock import SystemClock
from ..errors import Unauthenticated
from ..lifecycle import heartbeat
from ..metrics.collector import CONTENT_TYPE, InventoryCollector, exposition
from ..metrics.summary import SummaryCache, load_rows
from .context import services

bp = Blueprint("metrics", __name__)
_KEY = "certlocker.metrics"


def _inventory(app: Flask) -> InventoryCollector:
    collector = app.extensions.get(_KEY)
    if collector is None:
        s = services()
        clock = SystemClock()
        refresh = s.settings.metrics_refresh_seconds
        cache = SummaryCache(lambda: load_rows(s.store, clock.now()), refresh)
        token = SummaryCache(lambda: s.store.token_life().expires_at(clock.now()), refresh)
        reconcilers = SummaryCache(lambda: heartbeat.recorded(
            s.store, since=clock.now() - dt.timedelta(days=1)), refresh)
        collector = app.extensions.setdefault(
            _KEY, InventoryCollector(cache, token, reconcilers))
    made: InventoryCollector = collector
    return made


def _check_scrape_token() -> None:
    """:raises Unauthenticated: a token is configured and the request lacks it."""
    expected = services().settings.metrics_token
    if not expected:
        return
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
        raise Unauthenticated("send the metrics scrape token as 'Authorization: Bearer "
                              "<token>'")


@bp.get("/metrics")
def metrics() -> Response:
    _check_scrape_token()
    body = exposition(_inventory(current_app))
    return Response(body, mimetype=CONTENT_TYPE.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
