"""One HTTP call over libcurl (pycurl), failing the way requests fails.

The Vault and ACME clients keep requests' interface (hvac and ``acme`` are written
against it) but send their calls through libcurl: about 0.15 ms of certlocker's CPU per
call, against about 0.5 ms through urllib3 and 1.5 ms through requests, and answered
sooner. On 2 cores shared with OpenBao and the CA that CPU is most of certlocker's own
cost per call (``bench/run credentials``, ``bench/run issuance``). Callers classify
failures by requests' exception types, so those are what a failed call raises, carrying
the OS's cause where there is one (``failures.failure_reason`` reads it).

A libcurl handle serves one thread at a time, so each thread keeps its own, and its
connections stay open between calls; a call that fails closes it. A child process (a
fork) makes its own handles and never touches its parent's connections.
"""

from __future__ import annotations

import errno
import io
import os
import select
import socket
import ssl
import threading
from typing import NamedTuple

import pycurl
import requests
from urllib3 import HTTPHeaderDict

from .. import __version__

#: libcurl's error codes for a TLS failure (handshake, peer verification, CA file)
TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})
E_UNSUPPORTED_PROTOCOL, E_URL_MALFORMAT = 1, 3
E_COULDNT_RESOLVE_HOST, E_COULDNT_CONNECT, E_OPERATION_TIMEDOUT = 6, 7, 28
#: methods whose second sending changes nothing (LIST is Vault's; it carries no body)
REPLAYABLE = frozenset({"GET", "HEAD", "LIST", "OPTIONS"})
#: libcurl's own request headers that certlocker's calls never send
SUPPRESSED = (b"Expect:",)
#: who calls, unless the caller says (libcurl's default lists every library it links)
USER_AGENT = f"certlocker/{__version__}"

Timeout = float | tuple[float, float] | None
_INHERITED: list[pycurl.Curl] = []


class Answer(NamedTuple):
    status: int
    reason: str | None
    headers: HTTPHeaderDict  # case-insensitive; a repeated header joins with ", "
    content: bytes


class Trust(NamedTuple):
    """Whose certificates a TLS peer must present: a CA file or directory; or none
    checked at all (``verify=False`` in requests' terms)."""

    cafile: str | None = None
    capath: str | None = None
    verify: bool = True

    @classmethod
    def system(cls) -> Trust:
        """The trust store Python's ``ssl`` uses (the pycurl wheel's libcurl was built
        with a default of its own)."""
        paths = ssl.get_default_verify_paths()
        cafile = paths.cafile or paths.openssl_cafile
        capath = paths.capath or paths.openssl_capath
        return cls(cafile if cafile and os.path.isfile(cafile) else None,
                   capath if capath and os.path.isdir(capath) else None)

    @classmethod
    def located(cls, location: str) -> Trust:
        """A CA bundle file, or a directory of hashed CA certificates."""
        return cls(capath=location) if os.path.isdir(location) else cls(cafile=location)


class NewConnectionError(OSError):
    """No connection could be made, so the request was certainly not sent (named as
    urllib3 names it: ``vault.client`` retries such a failure even for a write)."""


class CurlClient:
    """Sends calls on one libcurl handle per thread (and per process)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def call(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
             timeout: Timeout, trust: Trust) -> Answer:
        """Send without redirects or retries; ``timeout`` as requests takes it (seconds,
        or a ``(connect, read)`` pair, or None).

        :raises requests.RequestException: as requests would for the same failure.
        """
        curl = self._handle()
        stale = _stale(curl)
        curl.reset()  # options only: connections, TLS sessions and the DNS cache stay
        if stale:
            curl.setopt(pycurl.FRESH_CONNECT, 1)
        curl.setopt(pycurl.MAXCONNECTS, 1)  # a fresh connection closes the one it replaces
        received = io.BytesIO()
        lines: list[bytes] = []
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.NOSIGNAL, 1)  # timeouts without signals: callers are threads
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.NOPROXY, "*")  # with a proxy configured, requests is used
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.WRITEFUNCTION, received.write)
        curl.setopt(pycurl.HEADERFUNCTION, lines.append)
        _set_trust(curl, trust)
        _set_method(curl, method, body)
        _set_timeout(curl, timeout)
        encodings = next((v for k, v in headers.items() if k.lower() == "accept-encoding"),
                         None)
        if encodings is not None:  # libcurl asks for them and decodes what comes back
            curl.setopt(pycurl.ACCEPT_ENCODING, encodings)
            headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
        curl.setopt(pycurl.HTTPHEADER, [*SUPPRESSED, *_content_type(headers, body),
                                        *_header_lines(headers)])
        try:
            curl.perform()
        except pycurl.error as exc:
            error = _as_requests_error(curl, exc)
            self._discard(curl)
            raise error from None
        reason, parsed = _parse_head(lines)
        return Answer(curl.getinfo(pycurl.RESPONSE_CODE), reason, parsed,
                      received.getvalue())

    def _handle(self) -> pycurl.Curl:
        """This thread's handle, made in this process: a forked child's thread keeps its
        parent's handle in ``_INHERITED``, never used and never freed (freeing it would
        shut down the parent's TLS sessions), and makes its own."""
        held: tuple[int, pycurl.Curl] | None = getattr(self._local, "held", None)
        pid = os.getpid()
        if held is None or held[0] != pid:
            if held is not None:
                _INHERITED.append(held[1])
            held = self._local.held = (pid, pycurl.Curl())
        return held[1]

    def _discard(self, curl: pycurl.Curl) -> None:
        """Close a handle whose call failed, with its connections: the thread's next call
        starts on a new one. A failed transfer is rare, and libcurl has more than once
        left state behind on the handle after one that stalled every later call on it
        until its timeout (curl issues 3966, 17139, 18206); a new handle costs one new
        connection."""
        self._local.held = None
        curl.close()


def _stale(curl: pycurl.Curl) -> bool:
    """Whether the connection the last call left open has something to read while idle:
    the server closed it, perhaps after a TLS ``close_notify`` (as Go servers do when
    they stop). libcurl's own check takes that alert for a live connection and, once the
    request fails on it, would send the request again; certlocker never lets it
    (``_set_method``), so such a connection is not used at all (as urllib3 decides)."""
    sock = curl.getinfo(pycurl.ACTIVESOCKET)
    if sock < 0:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _set_trust(curl: pycurl.Curl, trust: Trust) -> None:
    if not trust.verify:
        curl.setopt(pycurl.SSL_VERIFYPEER, 0)
        curl.setopt(pycurl.SSL_VERIFYHOST, 0)
        return
    if trust.cafile:
        curl.setopt(pycurl.CAINFO, trust.cafile)
    if trust.capath:
        curl.setopt(pycurl.CAPATH, trust.capath)


def _set_method(curl: pycurl.Curl, method: str, body: bytes | None) -> None:
    """The verb and body, sent at most once.

    libcurl sends a request again, unasked, when a kept-alive connection it reused dies
    before any answer: it cannot know whether the server acted on it. For a write that
    may apply it twice, so a write's body is read from a stream that refuses to rewind
    (the call fails instead, and ``vault.client`` reads back what landed), and a write
    without a body takes a fresh connection, where libcurl never sends again.
    """
    if method in REPLAYABLE and body is None:
        if method == "HEAD":
            curl.setopt(pycurl.NOBODY, 1)
        elif method != "GET":
            curl.setopt(pycurl.CUSTOMREQUEST, method)
        return
    curl.setopt(pycurl.POST, 1)  # a body, named with any verb over it
    if method != "POST":
        curl.setopt(pycurl.CUSTOMREQUEST, method)
    if not body:
        curl.setopt(pycurl.POSTFIELDSIZE, 0)
        if method not in REPLAYABLE:
            curl.setopt(pycurl.FRESH_CONNECT, 1)
        return
    curl.setopt(pycurl.POSTFIELDSIZE_LARGE, len(body))
    curl.setopt(pycurl.READFUNCTION, io.BytesIO(body).read)
    curl.setopt(pycurl.SEEKFUNCTION, _never_rewind)


def _never_rewind(offset: int, origin: int) -> int:
    return pycurl.SEEKFUNC_FAIL


def _set_timeout(curl: pycurl.Curl, timeout: Timeout) -> None:
    """libcurl bounds the connection and the whole call, not each read: the whole call
    gets connect + read."""
    if not timeout:
        return
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect * 1000)))
    curl.setopt(pycurl.TIMEOUT_MS, max(1, int((connect + read) * 1000)))


def _header_lines(headers: dict[str, str]) -> list[bytes]:
    """Each header as HTTP/1.1 sends it (latin-1, as http.client does: a Vault token
    taken from a request's header arrives decoded that way).

    :raises requests.exceptions.InvalidHeader: for a name or value that would break
        the request's framing (CR, LF or NUL) or has no latin-1 form.
    """
    lines = []
    for name, value in headers.items():
        line = f"{name}: {value}"
        if any(c in line for c in "\r\n\0"):
            raise requests.exceptions.InvalidHeader(f"header {name!r} holds a line break")
        try:
            lines.append(line.encode("latin-1"))
        except UnicodeEncodeError:
            raise requests.exceptions.InvalidHeader(
                f"header {name!r} has characters HTTP/1.1 cannot carry") from None
    return lines


def _content_type(headers: dict[str, str], body: bytes | None) -> list[bytes]:
    """libcurl labels a body as a form unless told otherwise; certlocker's callers label
    their bodies themselves when at all."""
    if body is None or any(k.lower() == "content-type" for k in headers):
        return []
    return [b"Content-Type:"]


def _parse_head(lines: list[bytes]) -> tuple[str | None, HTTPHeaderDict]:
    """The last response's reason and headers (a ``100 Continue`` may come first)."""
    reason: str | None = None
    headers = HTTPHeaderDict()
    for raw in lines:
        line = raw.decode("latin-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            parts = line.split(" ", 2)
            reason = parts[2] if len(parts) > 2 else None
            headers = HTTPHeaderDict()
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    return reason, headers


def _as_requests_error(curl: pycurl.Curl, exc: pycurl.error) -> requests.RequestException:
    code = exc.args[0] if exc.args else -1
    message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if code == E_COULDNT_CONNECT:
        os_errno = curl.getinfo(pycurl.OS_ERRNO)
        cause: OSError = (ConnectionRefusedError(os_errno, message)
                          if os_errno == errno.ECONNREFUSED else NewConnectionError(message))
        return requests.ConnectionError(cause)
    if code == E_COULDNT_RESOLVE_HOST:
        return requests.ConnectionError(socket.gaierror(socket.EAI_NONAME, message))
    if code == E_OPERATION_TIMEDOUT:
        # Nothing of the request sent (a new connection that never opened) is a connect
        # timeout: certainly not applied. Anything sent may have been.
        sent = curl.getinfo(pycurl.REQUEST_SIZE) > 0
        return (requests.ReadTimeout if sent else requests.ConnectTimeout)(message)
    if code in TLS_ERRORS:
        return requests.exceptions.SSLError(message)
    if code in (E_URL_MALFORMAT, E_UNSUPPORTED_PROTOCOL):
        return requests.exceptions.InvalidURL(message)
    return requests.ConnectionError(message)
