"""GET /metrics: Prometheus text format. It holds no secret but names every team's
certificates and target addresses, so with ``metrics_token`` set a scrape must present
it as ``Authorization: Bearer <token>`` (a 401 problem otherwise); without it the
endpoint is open, like /healthz."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from ..errors import Unauthenticated
from ..metrics.collector import CONTENT_TYPE, exposition
from .context import services

bp = Blueprint("metrics", __name__)


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
    body = exposition(services().metrics)
    return Response(body, mimetype=CONTENT_TYPE.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
