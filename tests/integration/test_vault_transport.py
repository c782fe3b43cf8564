"""certlocker's Vault transport (transport/vault_session.py) against real OpenBao servers: TLS
verified against the configured CA, redirects from a standby followed, errors mapped."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from certlocker.errors import AccessDenied, Conflict, VaultUnavailable
from certlocker.paths import VaultPaths
from certlocker.vault.client import make_client
from certlocker.vault.store import VaultStore
from certlocker.transport.vault_session import CurlSession
from tests.support.stack import OpenBao, devstack, free_port

pytestmark = pytest.mark.integration

PATHS = VaultPaths("secret")
TOKEN = "transport-root"


@pytest.fixture(scope="module")
def tls_openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``bao server -dev-tls``: HTTPS with a CA it generates (our only trust anchor)."""
    state = tmp_path_factory.mktemp("tls-openbao")
    port = free_port(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    proc = devstack.Proc.spawn(
        "openbao-tls", [devstack.find_binary("bao"), "server", "-dev-tls",
                        f"-dev-tls-cert-dir={state}", f"-dev-root-token-id={TOKEN}",
                        f"-dev-listen-address=127.0.0.1:{port}"],
        state / "openbao.log", env=env, marker=f"-dev-listen-address=127.0.0.1:{port}")
    try:
        ca = state / "vault-ca.pem"
        addr = f"https://127.0.0.1:{port}"
        devstack.wait_until(lambda: ca.exists() and _answers(addr, ca), 30, interval=0.2,
                            what="OpenBao over TLS")
        yield addr, ca
    finally:
        proc.stop()


def _answers(addr: str, ca: Path) -> bool:
    try:
        return VaultStore.connect(addr, TOKEN, PATHS, str(ca), retry_seconds=0).health()
    except VaultUnavailable:
        return False


def test_tls_is_verified_against_the_configured_ca(tls_openbao: tuple[str, Path]) -> None:
    addr, ca = tls_openbao
    store = VaultStore.connect(addr, TOKEN, PATHS, str(ca), retry_seconds=0)
    version = store.write("transport/tls", {"over": "tls"}, cas=None)
    assert store.read("transport/tls").data == {"over": "tls"}
    assert version >= 1
    untrusted = VaultStore.connect(addr, TOKEN, PATHS, None, retry_seconds=0)
    with pytest.raises(VaultUnavailable):  # the dev CA is not in the system store
        untrusted.read("transport/tls")


def test_reads_writes_lists_and_errors_map_as_before(openbao: OpenBao) -> None:
    store = VaultStore.connect(openbao.addr, openbao.root_token, PATHS, retry_seconds=0)
    base = f"transport/{time.monotonic_ns()}"
    assert store.write(f"{base}/a", {"n": 1, "nested": {"x": [1, 2]}}, cas=0) == 1
    assert store.read(f"{base}/a").data == {"n": 1, "nested": {"x": [1, 2]}}
    assert store.list(base) == ["a"]
    assert store.live_versions(f"{base}/a") == [1]
    assert store.read(f"{base}/missing") is None
    with pytest.raises(Conflict):
        store.write(f"{base}/a", {"n": 2}, cas=0)
    denied = VaultStore.connect(openbao.addr, "not-a-token", PATHS, retry_seconds=0)
    with pytest.raises(AccessDenied):  # Vault answers 403 for an unknown token
        denied.read(f"{base}/a")


class _Redirector(http.server.BaseHTTPRequestHandler):
    target = ""

    def _redirect(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _redirect

    def do_LIST(self) -> None:
        self._redirect()

    def log_message(self, *args: object) -> None:
        pass


def test_a_standby_redirect_is_followed_with_method_and_body(openbao: OpenBao) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    _Redirector.target = openbao.addr
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        via = f"http://127.0.0.1:{server.server_address[1]}"
        store = VaultStore.connect(via, openbao.root_token, PATHS, retry_seconds=0)
        logical = f"transport/redirected-{time.monotonic_ns()}"
        assert store.write(logical, {"moved": True}, cas=0) == 1
        assert store.read(logical).data == {"moved": True}
    finally:
        server.shutdown()
        server.server_close()


def test_make_client_uses_libcurl_unless_a_proxy_is_configured(
        monkeypatch: pytest.MonkeyPatch, openbao: OpenBao) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert isinstance(make_client(openbao.addr, "t").adapter.session, CurlSession)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert not isinstance(make_client(openbao.addr, "t").adapter.session, CurlSession)
