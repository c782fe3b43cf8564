"""Why an HTTP call failed, in an operator's words.

Every HTTP client of certlocker (the Vault and ACME clients over libcurl, webhooks over
requests) fails with requests' exceptions, the OS's cause chained where there is one;
``failure_reason`` names which failure it was."""

from __future__ import annotations

import socket

import requests


def failure_reason(exc: BaseException) -> str:
    """A few words for an operator on why an HTTP call failed: ``connection refused``,
    ``connect timed out``, ``read timed out``, ``TLS error``, ``name not resolved`` or the
    exception's type name. Never the URL (a webhook's may carry a token)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "name not resolved"
        nxt = getattr(cause, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in getattr(cause, "args", ()) if isinstance(a, BaseException)),
                       None)
        cause = nxt or cause.__cause__ or cause.__context__
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "read timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    return type(exc).__name__
