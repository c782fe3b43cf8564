"""Small real helpers for ACME integration tests: an http-01 responder on a loopback
port serving key authorizations from memory, a counting HTTP transport, in-memory
journal/account stores, and a VaultStore on the OpenBao dev server's ``secret/`` mount."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import requests
from requests.adapters import HTTPAdapter

from certlocker.issuance.base import Inflight


class Http01Responder(dict):  # type: ignore[type-arg]
    """A ChallengeStore whose answers a real HTTP server on ``port`` serves."""

    port: int

    def put(self, token: str, key_authorization: str) -> None:
        self[token] = key_authorization

    def delete(self, token: str) -> None:
        self.pop(token, None)


@contextmanager
def http01_responder(port: int) -> Iterator[Http01Responder]:
    answers = Http01Responder()
    answers.port = port
    prefix = "/.well-known/acme-challenge/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            token = self.path[len(prefix):] if self.path.startswith(prefix) else ""
            body = answers.get(token)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write((body or "not found").encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class CountingTransport(HTTPAdapter):
    """A real HTTP transport that remembers every (method, url) it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []
        self.bad_nonces = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append((request.method or "", request.url or ""))
        response = super().send(request, **kwargs)
        if response.status_code == 400 and b"badNonce" in response.content:
            self.bad_nonces += 1
        return response

    def count(self, method: str, url: str) -> int:
        return sum(1 for m, u in self.requests if m == method and u == url)


class MemoryAccounts:
    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.version = 0

    def load(self) -> tuple[dict[str, Any] | None, int]:
        return self.doc, self.version

    def save(self, document: dict[str, Any], cas: int) -> int:
        self.doc, self.version = dict(document), self.version + 1
        return self.version


class MemoryJournal:
    def __init__(self) -> None:
        self.state: Inflight | None = None

    def load(self) -> Inflight | None:
        return self.state

    def save(self, state: Inflight) -> None:
        self.state = state


def root_store(openbao: Any) -> Any:
    """A VaultStore with the root token on the dev server's KV v2 mount ``secret``."""
    from certlocker.paths import VaultPaths
    from certlocker.vault.store import VaultStore

    return VaultStore.connect(openbao.addr, openbao.root_token, VaultPaths(mount="secret"))
