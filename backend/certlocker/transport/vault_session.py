"""How certlocker's Vault calls travel: libcurl under hvac, and OpenBao's index headers.

hvac asks only for a ``requests.Session``-like object with ``request()``.
``CurlSession`` gives it exactly what it reads (status, headers, body, JSON) over
libcurl, about a tenth of requests' CPU per call (``transport/curl.py``); with a proxy
configured, requests carries the calls (``IndexedTransport``). Errors are requests'
exceptions either way, so callers classify failures the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from typing import Any
from urllib.parse import urlencode

import requests
import requests.adapters

from .curl import CurlClient, Timeout, Trust

REDIRECTS = (307, 308)  # a standby without request forwarding redirects to the active node
MAX_REDIRECTS = 3


class ConsistencyIndex:
    """The newest storage index (``X-Vault-Index``) this process has seen from Vault.

    OpenBao's standby nodes answer reads from their own replica (2.5+), so a read right
    after a write, or after another replica's write that a refused write revealed, can
    come back stale. Sending the newest index with ``X-Vault-Inconsistent:
    forward-active-node`` (OpenBao 2.7+, as in Vault Enterprise) makes a standby that is
    behind forward the request to the active node: read-your-writes across every token
    of the process. Servers without the feature ignore both headers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: str | None = None
        self._rank = -1

    def observe(self, value: str | None) -> None:
        if not value:
            return
        rank = _index_rank(value)
        with self._lock:
            if rank is None or rank >= self._rank:
                self._value, self._rank = value, -1 if rank is None else rank

    def headers(self) -> dict[str, str]:
        value = self._value
        if value is None:
            return {}
        return {"X-Vault-Index": value, "X-Vault-Inconsistent": "forward-active-node"}


def _index_rank(value: str) -> int | None:
    """OpenBao's index is base64 JSON ``{"cluster": ..., "value": "<n>"}``; documented as
    opaque, so anything else is simply taken as the newest."""
    try:
        return int(json.loads(base64.b64decode(value, validate=True))["value"])
    except (ValueError, TypeError, KeyError, binascii.Error):
        return None


class IndexedTransport(requests.adapters.HTTPAdapter):
    """requests' transport, carrying the process's ``ConsistencyIndex`` both ways."""

    def __init__(self, index: ConsistencyIndex, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = index

    def send(self, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        request.headers.update(self.index.headers())
        response = super().send(request, *args, **kwargs)
        self.index.observe(response.headers.get("X-Vault-Index"))
        return response


class Response:
    """The part of ``requests.Response`` that hvac and certlocker read."""

    __slots__ = ("status_code", "headers", "content", "url", "reason")

    def __init__(self, status_code: int, headers: Any, content: bytes, url: str,
                 reason: str | None) -> None:
        self.status_code = status_code
        self.headers = headers  # case-insensitive (urllib3's HTTPHeaderDict)
        self.content = content
        self.url = url
        self.reason = reason

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class CurlSession:
    """What hvac needs of a requests session, over libcurl (``curl.CurlClient``)."""

    verify: Any = None  # hvac reads these three; TLS trust is the session's
    cert: Any = None
    proxies: Any = None

    def __init__(self, index: ConsistencyIndex, *, ca_cert: str | None = None) -> None:
        self.index = index
        self._trust = Trust.located(ca_cert) if ca_cert else Trust.system()
        self._client = CurlClient()

    def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                allow_redirects: bool = True, json: Any = None,
                params: dict[str, Any] | None = None, data: Any = None,
                timeout: Timeout = None, **_ignored: Any) -> Response:
        """:raises requests.RequestException: as requests would for the same failure."""
        sent = dict(headers or {})
        body = data.encode() if isinstance(data, str) else data
        if json is not None:
            body = _dumps(json)
            sent["Content-Type"] = "application/json"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        for _ in range(MAX_REDIRECTS + 1):
            sent.update(self.index.headers())
            answer = self._client.call(method.upper(), url, body, sent, timeout, self._trust)
            self.index.observe(answer.headers.get("X-Vault-Index"))
            location = answer.headers.get("Location")
            if not (allow_redirects and answer.status in REDIRECTS and location):
                return Response(answer.status, answer.headers, answer.content, url,
                                answer.reason)
            url = location
        raise requests.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()
