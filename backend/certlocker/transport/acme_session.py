"""The ACME client's HTTP session: requests' interface, libcurl underneath.

The ``acme`` library sends every call through ``requests.Session.request`` and reads a
``requests.Response``. For the calls it makes (a method, a URL, headers, a JWS body, a
timeout, ``verify``), requests spends about as much CPU preparing and merging what
certlocker never uses (cookies, auth, hooks, environment, adapters) as the call itself
costs, about 10 ms of CPU per certificate on 2 cores. ``LeanSession`` sends those
calls through libcurl (``transport/curl.py``) and builds the same
``requests.Response``; anything else (a redirect, an argument it does not know) goes
through requests as before, and its errors are requests' exceptions, so callers classify
failures the same way.
"""

from __future__ import annotations

import functools
import time
import urllib.parse
from typing import Any, Protocol

import requests
import requests.adapters
import requests.structures
import requests.utils

from . import netenv
from .curl import Answer, CurlClient, Trust

REDIRECTS = (301, 302, 303, 307, 308)
MAX_PATH_SEGMENTS = 3
NO_RESPONSE = "0"  # cert-manager's status label for a request that got no answer
DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
#: requests.Session.request's arguments that the libcurl path handles itself
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
    """A ``requests.Session`` that sends plain calls through libcurl directly. It never
    reads the environment (``trust_env`` is off): use it only without a proxy."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self._client = CurlClient()

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
        answer = self._client.call(method.upper(), url, body, sent, timeout, _trust(verify))
        if allow_redirects and answer.status in REDIRECTS and answer.headers.get("Location"):
            return super().request(method, url, data=data, headers=headers,
                                   timeout=timeout, verify=verify)
        return _response(method.upper(), url, sent, body, answer)


@functools.lru_cache(maxsize=8)
def _trust(verify: bool | str | None) -> Trust:
    """The trust for requests' ``verify`` (True: requests' own bundle)."""
    if verify is False:
        return Trust(verify=False)
    return Trust.located(requests.utils.DEFAULT_CA_BUNDLE_PATH
                         if verify in (True, None) else str(verify))


def _response(method: str, url: str, headers: dict[str, str], body: Any,
              answer: Answer) -> requests.Response:
    """What requests' adapter builds from the same answer."""
    response = requests.Response()
    response.status_code = answer.status
    response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
    response._content = answer.content
    response.encoding = requests.utils.get_encoding_from_headers(response.headers)
    # requests' own adapter copies the reason as it is; its stubs say str only.
    response.reason = answer.reason  # type: ignore[assignment]
    response.url = url
    request = requests.PreparedRequest()
    request.method, request.url, request.body = method, url, body
    request.headers = requests.structures.CaseInsensitiveDict(headers)
    response.request = request
    return response


class RequestObserver(Protocol):
    """Told about every HTTP request the ACME client makes (metrics count them by the
    labels of cert-manager's ``certmanager_http_acme_client_request_count``)."""

    def acme_request(self, scheme: str, host: str, path: str, method: str, status: str,
                     seconds: float) -> None: ...


class NoRequestObserver:
    def acme_request(self, scheme: str, host: str, path: str, method: str, status: str,
                     seconds: float) -> None:
        return None


def path_label(path: str) -> str:
    """The endpoint of an ACME URL without the ids in it, so a label stays bounded:
    ``/acme/authz/1234/abcd`` -> ``/acme/authz``, ``/finalize-order/Xy3q`` ->
    ``/finalize-order``, ``/acme/new-order`` unchanged. A segment with a digit or over
    24 characters is an id (ACME endpoint names have neither), and what follows it
    too."""
    kept: list[str] = []
    for segment in path.split("/"):
        if not segment:
            continue
        if any(c.isdigit() for c in segment) or len(segment) > 24 \
                or len(kept) == MAX_PATH_SEGMENTS:
            break
        kept.append(segment)
    return "/" + "/".join(kept)


def observed(observer: RequestObserver, method: str, url: str, send: Any) -> Any:
    """``send()``'s response, telling ``observer`` its status (``NO_RESPONSE`` when it
    raised) and how long it took."""
    parts = urllib.parse.urlsplit(url)
    started = time.monotonic()
    status = NO_RESPONSE
    try:
        response = send()
        status = str(response.status_code)
        return response
    finally:
        observer.acme_request(parts.scheme, parts.netloc, path_label(parts.path),
                              method.upper(), status, time.monotonic() - started)
