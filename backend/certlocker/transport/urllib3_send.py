"""One HTTP call through a urllib3 pool, failing the way requests fails.

The Vault and ACME clients keep requests' interface (hvac and ``acme`` are written
against it) but send their calls through urllib3 directly, which costs a fraction of the
CPU. Callers classify failures by requests' exception types, so those are what a failed
call raises here; ``failure_reason`` says in words which failure it was.
"""

from __future__ import annotations

import socket
from typing import Any

import requests
import urllib3
import urllib3.exceptions


def send(pool: urllib3.PoolManager, method: str, url: str, body: Any,
         headers: dict[str, str], timeout: Any) -> urllib3.BaseHTTPResponse:
    """Send without redirects or retries; ``timeout`` as requests takes it (seconds, or
    a ``(connect, read)`` pair, or None).

    :raises requests.RequestException: as requests would for the same failure.
    """
    try:
        return pool.urlopen(method, url, body=body, headers=headers,
                            timeout=_timeout(timeout), redirect=False, retries=False)
    except urllib3.exceptions.NewConnectionError as exc:
        # A subclass of ConnectTimeoutError in urllib3, but mostly a refused connection:
        # requests makes it a ConnectionError, and so do we.
        raise requests.ConnectionError(exc) from exc
    except urllib3.exceptions.ConnectTimeoutError as exc:
        raise requests.ConnectTimeout(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.ReadTimeout(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except urllib3.exceptions.HTTPError as exc:  # refused, reset, protocol errors
        raise requests.ConnectionError(exc) from exc


def _timeout(timeout: Any) -> urllib3.Timeout | None:
    if not timeout:
        return None
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return urllib3.Timeout(connect=timeout, read=timeout)


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
