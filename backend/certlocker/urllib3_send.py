"""One HTTP call through a urllib3 pool, failing the way requests fails.

The Vault and ACME clients keep requests' interface (hvac and ``acme`` are written
against it) but send their calls through urllib3 directly, which costs a fraction of the
CPU. Callers classify failures by requests' exception types, so those are what a failed
call raises here.
"""

from __future__ import annotations

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
