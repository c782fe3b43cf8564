"""Errors -> RFC 9457 problem documents, in one place.

Every domain error maps by its own ``status``/``type``; werkzeug's HTTP errors (404 for
an unknown route, 405, 413…) become problems too; anything else is a 500 whose body
says nothing about the cause (the log line has the exception class, never a trace).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import PROBLEM_BASE, CertlockerError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
#: every credential certlocker takes can be sent as ``Authorization: Bearer`` (a Vault
#: token, a service credential, the metrics scrape token); ``detail`` says which
CHALLENGE = 'Bearer realm="certlocker"'


def problem(status: int, title: str, detail: str, type_: str = "about:blank",
            **extra: Any) -> Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail,
            "instance": request.path}
    body.update({k: v for k, v in extra.items() if v is not None})
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = PROBLEM_JSON
    return resp


def init_app(app: Flask) -> None:
    @app.errorhandler(CertlockerError)
    def _domain(exc: CertlockerError) -> Response:
        if exc.status >= 500:
            log.warning("request.failed", extra={"error": type(exc).__name__,
                                                  "detail": exc.detail, "path": request.path})
        extra = {k: v for k, v in exc.extra.items()
                 if isinstance(v, (str, int, float)) or k == "refused"}
        resp = problem(exc.status, exc.title, exc.detail, exc.type, **extra)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            resp.headers["Retry-After"] = str(int(retry_after))
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = CHALLENGE  # RFC 9110 section 15.5.2
        return resp

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        resp = problem(status, exc.name, exc.description or exc.name,
                       PROBLEM_BASE + exc.name.lower().replace(" ", "-"))
        for name, value in exc.get_headers():  # a 405's Allow (RFC 9110 section 15.5.6)
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.error("request.crashed", extra={"error": type(exc).__name__, "path": request.path})
        return problem(500, "Internal error", "an unexpected error occurred; see the "
                       "service log for the request time", PROBLEM_BASE + "internal")
