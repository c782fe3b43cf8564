"""The ACME client's HTTP session: requests' interface, urllib3 underneath.

The ``acme`` library sends every call through ``requests.Session.request`` and reads a
``requests.Response``. For the calls it makes (a method, a URL, headers, a JWS body, a
timeout, ``verify``), requests spends about as much CPU preparing and merging what
certlocker never uses (cookies, auth, hooks, environment, adapters) as the call itself
costs, about 10 ms of CPU per certificate on 2 cores. ``LeanSession`` sends those
calls through one urllib3 pool and builds the same ``requests.Response``; anything else
(a redirect, an argument it does not know) goes through requests as before, and its
errors are requests' exceptions, so callers classify failures the same way.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
import requests.adapters
import requests.structures
import requests.utils
import urllib3

from .. import netenv
from ..urllib3_send import send

REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
#: requests.Session.request's arguments that the urllib3 path handles itself
LEAN_ARGUMENTS = ("data", "headers", "timeout", "verify", "allow_redirects")


def session_for(transport: requests.adapters.BaseAdapter | None = None) -> requests.Session:
    """The ACME client's session: lean unless a proxy is configured (then requests reads
    its environment on each call, for the proxy and ``NO_PROXY``) or a ``transport`` is
    given (a test's fake CA, mounted on a plain requests session). Without a proxy that
    per-call reading yields only the CA bundle variables, which the caller reads once
    (``netenv.ca_bundle``), and ~/.netrc, not wanted: the account's JWS is the only
    credential an ACME call carries."""
    if transport is None and not netenv.any_set(netenv.PROXY_VARIABLES):
        return LeanSession()
    session = requests.Session()
    session.trust_env = netenv.any_set(netenv.PROXY_VARIABLES)
    if transport is not None:
        session.mount("https://", transport)
        session.mount("http://", transport)
    return session


class LeanSession(requests.Session):
    """A ``requests.Session`` that sends plain calls through urllib3 directly. It never
    reads the environment (``trust_env`` is off): use it only without a proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self._lock = threading.Lock()
        self._pools: dict[Any, urllib3.PoolManager] = {}

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        """Takes requests' arguments as they are, so any call it does not handle itself
        goes to requests unchanged (positional arguments included).

        :raises requests.RequestException: as requests would for the same failure.
        """
        if (args or any(v is not None for k, v in kwargs.items() if k not in LEAN_ARGUMENTS)
                or not isinstance(method, str) or not isinstance(url, str)):
            return super().request(method, url, *args, **kwargs)
        data, headers = kwargs.get("data"), kwargs.get("headers")
        timeout, verify = kwargs.get("timeout"), kwargs.get("verify", True)
        allow_redirects = kwargs.get("allow_redirects", True)
        sent = {**DEFAULT_HEADERS, **dict(headers or {})}
        body = data.encode("utf-8") if isinstance(data, str) else data
        raw = send(self._pool(verify), method.upper(), url, body, sent, timeout)
        if allow_redirects and raw.status in REDIRECTS and raw.headers.get("Location"):
            return super().request(method, url, data=data, headers=headers,
                                   timeout=timeout, verify=verify)
        return _response(method.upper(), url, sent, body, raw)

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.clear()
        super().close()

    def _pool(self, verify: Any) -> urllib3.PoolManager:
        with self._lock:
            pool = self._pools.get(verify)
            if pool is None:
                pool = self._pools[verify] = urllib3.PoolManager(
                    num_pools=4, maxsize=16, retries=False, **_tls(verify))
            return pool


def _tls(verify: Any) -> dict[str, Any]:
    """urllib3's TLS settings for requests' ``verify`` (True: requests' own bundle)."""
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    location = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify in (True, None) else verify
    if os.path.isdir(location):
        return {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir": location}
    return {"cert_reqs": "CERT_REQUIRED", "ca_certs": location}


def _response(method: str, url: str, headers: dict[str, str], body: Any,
              raw: urllib3.BaseHTTPResponse) -> requests.Response:
    """What requests' adapter builds from the same urllib3 response."""
    response = requests.Response()
    response.status_code = raw.status
    response.headers = requests.structures.CaseInsensitiveDict(raw.headers)
    response._content = raw.data
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    # requests' own adapter copies urllib3's reason as it is; its stubs say str only.
    response.reason = raw.reason  # type: ignore[assignment]
    response.url = url
    request = requests.PreparedRequest()
    request.method, request.url, request.body = method, url, body
    request.headers = requests.structures.CaseInsensitiveDict(headers)
    response.request = request
    return response
