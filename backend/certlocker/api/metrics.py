"""GET /metrics: Prometheus text format (unauthenticated, like /healthz; it names
certificates and targets but holds no secret)."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Flask, Response, current_app

from ..clock import SystemClock
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
    return collector


@bp.get("/metrics")
def metrics() -> Response:
    body = exposition(_inventory(current_app))
    return Response(body, mimetype=CONTENT_TYPE.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
