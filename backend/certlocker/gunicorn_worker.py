"""gunicorn workers whose own refusals are RFC 9457 problem documents.

gunicorn answers a request it cannot parse (a request line over ``limit_request_line``,
headers over ``limit_request_fields``/``limit_request_field_size``, malformed HTTP)
before Flask ever sees it, with a ``text/html`` page, and has no setting or hook for that
body. These workers keep gunicorn's decision (status, connection closed, warning and
access log lines) and only change what is written: ``application/problem+json`` like
every other certlocker error, echoing nothing of the request.

    gunicorn --worker-class certlocker.gunicorn_worker.ThreadWorker --threads 8 ...

(``SyncWorker`` for ``--threads 1`` deployments that name a worker class.)
"""

from __future__ import annotations

import datetime as dt
import gc
import json
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.message import Request
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers import gthread, sync

from .errors import PROBLEM_BASE
from .metrics import shared_dir


def _classes(*names: str) -> tuple[type[BaseException], ...]:
    # Not every class exists in every supported gunicorn (22+).
    return tuple(getattr(http_errors, n) for n in names if hasattr(http_errors, n))


#: gunicorn's refusal -> (status, reason, problem slug, detail); the first match wins.
_REFUSALS: tuple[tuple[tuple[type[BaseException], ...], int, str, str, str], ...] = (
    (_classes("LimitRequestLine"), 414, "URI Too Long", "uri-too-long",
     "the request line (method, path and query) is longer than this server accepts"),
    (_classes("LimitRequestHeaders"), 431, "Request Header Fields Too Large",
     "request-header-fields-too-large",
     "the request has more header fields, or longer ones, than this server accepts"),
    (_classes("UnsupportedTransferCoding"), 501, "Not Implemented", "not-implemented",
     "the request's Transfer-Encoding is not supported"),
    (_classes("ExpectationFailed"), 417, "Expectation Failed", "expectation-failed",
     "the request's Expect header cannot be met"),
    (_classes("ForbiddenProxyRequest"), 403, "Forbidden", "forbidden",
     "PROXY protocol lines are not accepted from this address"),
    (_classes("InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion",
              "InvalidHeader", "InvalidHeaderName", "InvalidProxyLine",
              "InvalidSchemeHeaders", "ObsoleteFolding", "InvalidChunkSize",
              "ChunkMissingTerminator", "InvalidChunkExtension", "InvalidH2CPreface"),
     400, "Bad Request", "malformed-request", "the request is not valid HTTP/1.1"),
)


def refusal(exc: BaseException) -> tuple[int, str, bytes] | None:
    """The status, reason and problem body for a request gunicorn refused, or None when
    ``exc`` is not such a refusal (gunicorn's own handling then applies)."""
    for classes, status, reason, slug, detail in _REFUSALS:
        if classes and isinstance(exc, classes):
            body = json.dumps({"type": PROBLEM_BASE + slug, "title": reason,
                               "status": status, "detail": detail}).encode()
            return status, reason, body
    return None


class ProblemRefusals:
    """Mixed into a gunicorn worker before the worker class itself."""

    log: Any
    cfg: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        found = refusal(exc)
        if found is None:
            super().handle_error(req, client, addr, exc)  # type: ignore[misc]
            return
        status, reason, body = found
        addr = addr or ("", -1)
        self.log.warning("Invalid request from ip=%s: %s", addr[0], type(exc).__name__)
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
                "Content-Type: application/problem+json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        try:
            util.write_nonblock(client, head + body)
        except Exception:  # noqa: BLE001 - the client is gone; as gunicorn does
            self.log.debug("Failed to send error message.")
        # Some refusals carry the parsed request (others only a string under that name).
        parsed = req if req is not None else getattr(exc, "req", None)
        if isinstance(parsed, Request):
            environ = default_environ(parsed, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            resp = Response(parsed, client, self.cfg)
            resp.status = f"{status} {reason}"
            resp.response_length = len(body)
            self.log.access(resp, parsed, environ, dt.timedelta(0))


    def load_wsgi(self) -> None:
        """Load the app, then move every object it made so far (modules, the app, its
        services) out of the garbage collector's reach (``gc.freeze``): a full collection
        then walks only what requests allocate, not the whole loaded process, so it no
        longer stalls every thread of the worker for milliseconds at a time (the tail
        of each request's latency). Frozen objects are never collected: they live as
        long as the worker anyway."""
        super().load_wsgi()  # type: ignore[misc]
        gc.collect()
        gc.freeze()

    @classmethod
    def setup(cls) -> None:
        """Run by gunicorn in the master when it loads the worker class, before any
        worker forks: the workers share one prometheus_client multiprocess directory,
        so every scrape sums all of them (``metrics.shared_dir``)."""
        shared_dir.prepare()


#: The shortest ``--keep-alive`` (seconds) that outlasts every Retry-After certlocker
#: gives a polling client (the ACME server's processing order: 2 s). gunicorn's default
#: is 2: a client that waits the Retry-After and sends its poll on the kept connection
#: races the server closing it, and loses the request (stock ACME clients then fail).
KEEPALIVE = 5


class ThreadWorker(ProblemRefusals, gthread.ThreadWorker):
    """gunicorn's gthread worker (``--threads``), with problem-document refusals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if 0 < self.cfg.keepalive < KEEPALIVE:
            self.log.warning(
                "--keep-alive %s is shorter than certlocker needs (%s): clients polling at "
                "the Retry-After they were given lose requests to the server closing "
                "their connection", self.cfg.keepalive, KEEPALIVE)


class SyncWorker(ProblemRefusals, sync.SyncWorker):
    """gunicorn's sync worker, with problem-document refusals."""
