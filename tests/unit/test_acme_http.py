"""LeanSession answers what requests would, for the calls the ACME client makes: status,
headers (repeated ones joined, as requests does, so ``Link`` relations survive), body,
JSON, errors as requests' exceptions; redirects go through requests itself.

A real HTTP server on loopback stands for the CA.
"""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
from typing import Iterator

import pytest
import requests

from certlocker.transport.acme_session import LeanSession


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Handler.seen.append((self.command, self.path, dict(self.headers), body))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/order")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps({"status": "valid", "path": self.path}).encode()
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:
            payload = gzip.compress(payload)
        self.send_response(201 if self.command == "POST" else 200)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "application/json")
        self.send_header("Replay-Nonce", "abc")
        self.send_header("Link", '<https://ca.test/dir>;rel="index"')
        self.send_header("Link", '<https://ca.test/authz/1>;rel="up"')
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def session() -> Iterator[LeanSession]:
    made = LeanSession()
    try:
        yield made
    finally:
        made.close()


def test_a_post_answers_as_requests_would(server: str, session: LeanSession) -> None:
    response = session.request("POST", f"{server}/new-order", data='{"jws": 1}',
                               headers={"Content-Type": "application/jose+json",
                                        "User-Agent": "certlocker"}, timeout=5,
                               verify=True)
    assert response.status_code == 201 and response.ok
    assert response.json() == {"status": "valid", "path": "/new-order"}
    assert response.headers["replay-nonce"] == "abc"
    assert response.links["up"]["url"] == "https://ca.test/authz/1"
    assert response.request.method == "POST"
    method, path, headers, body = Handler.seen[-1]
    assert (method, path, body) == ("POST", "/new-order", b'{"jws": 1}')
    assert headers["Content-Type"] == "application/jose+json"
    assert headers["User-Agent"] == "certlocker"


def test_a_compressed_answer_arrives_decoded_as_requests_gives_it(
        server: str, session: LeanSession) -> None:
    """The session asks for gzip as requests does; the CA may take it up."""
    response = session.request("GET", f"{server}/directory", timeout=5, verify=True)
    assert "gzip" in Handler.seen[-1][2]["Accept-Encoding"]
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.json() == {"status": "valid", "path": "/directory"}


def test_the_same_answers_as_requests_itself(server: str, session: LeanSession) -> None:
    lean = session.request("GET", f"{server}/order/1", timeout=5, verify=True)
    plain = requests.Session()
    plain.trust_env = False
    with plain:
        reference = plain.request("GET", f"{server}/order/1", timeout=5, verify=True)
    assert lean.status_code == reference.status_code
    assert lean.content == reference.content
    assert lean.headers["Link"] == reference.headers["Link"]
    assert lean.links == reference.links
    assert lean.encoding == reference.encoding


def test_a_redirect_is_followed_through_requests(server: str, session: LeanSession) -> None:
    response = session.request("GET", f"{server}/moved", timeout=5, verify=True)
    assert response.status_code == 200 and response.json()["path"] == "/order"


def test_positional_arguments_reach_requests_as_they_would_there(
        server: str, session: LeanSession) -> None:
    """requests' order (params, data, headers, ...) holds for positional arguments too;
    they once clashed with the keywords the lean path takes (a TypeError)."""
    response = session.request("POST", f"{server}/new-order", {"q": "1"}, b"body",
                               {"Content-Type": "application/jose+json"}, timeout=5)
    assert response.status_code == 201
    method, path, headers, body = Handler.seen[-1]
    assert (method, path, body) == ("POST", "/new-order?q=1", b"body")
    assert headers["Content-Type"] == "application/jose+json"


def test_a_refused_connection_is_requests_connection_error(session: LeanSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        session.request("GET", f"http://127.0.0.1:{port}/", timeout=5, verify=True)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_not_reported_as_a_timeout(session: LeanSession) -> None:
    from certlocker.transport.failures import failure_reason

    with pytest.raises(requests.ConnectionError) as caught:
        session.request("GET", f"http://127.0.0.1:{_closed_port()}/", timeout=5, verify=True)
    assert not isinstance(caught.value, requests.Timeout)
    assert failure_reason(caught.value) == "connection refused"


def test_an_issuer_whose_ca_refuses_says_connection_refused() -> None:
    from certlocker.errors import IssuanceFailed
    from certlocker.issuance.acme_issuer import AcmeIssuer
    from certlocker.issuance.base import IssueRequest
    from certlocker.models import CertificateRef, KeyType
    from certlocker.settings import IssuerSettings
    from tests.support.acme_helpers import MemoryAccounts, MemoryJournal

    conf = IssuerSettings(name="down", directory_url=f"http://127.0.0.1:{_closed_port()}/dir")
    issuer = AcmeIssuer(conf, MemoryAccounts(), object(), timeout=5)  # type: ignore[arg-type]
    with pytest.raises(IssuanceFailed) as caught:
        issuer.issue(IssueRequest(CertificateRef("dev", "web", "www"), ("www.example.test",),
                                  KeyType.EC_P256), MemoryJournal())
    assert "connection refused" in caught.value.detail
    assert "Timeout" not in caught.value.detail
