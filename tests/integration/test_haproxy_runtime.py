"""HAProxy's Runtime API as the alternative to a reload, with a real HAProxy.

`certlocker deliver haproxy-runtime --socket S STAGED CRT` writes CRT atomically, then
`set ssl cert` + `commit ssl cert`: the new certificate is served by the SAME worker
(no reload: same master PID, same worker PID), and a restart still serves it (the file
was written first).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from certlocker.delivery.formats import Bundle, haproxy_pem
from certlocker.delivery.haproxy_runtime import RuntimeApi, hot_update, served_sha1
from certlocker.errors import DeliveryFailed, InvalidInput
from tests.support.tls_servers import (IssuedChain, TlsServer, issue_test_chain, start_haproxy,
                                       wait_until)

pytestmark = pytest.mark.integration

CERTLOCKER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "certlocker"


def _pem(chain: IssuedChain) -> str:
    return haproxy_pem(Bundle(chain.certificate, chain.chain, chain.private_key))


def _served_after_start(server: TlsServer) -> str:
    """The served leaf's SHA-256 once the new process completes handshakes (a busy
    machine may accept the TCP connection before the worker answers TLS)."""
    wait_until(lambda: server.served_sha256() is not None, 15, "a TLS handshake")
    served = server.served_sha256()
    assert served is not None
    return served


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


@pytest.fixture
def haproxy(tmp_path: Path):
    """HAProxy serving ``v0`` with an admin stats socket; restartable, stopped by PID."""
    live = tmp_path / "certs" / "www.pem"
    live.parent.mkdir()
    v0 = issue_test_chain()
    live.write_text(_pem(v0))
    live.chmod(0o600)
    sock = tmp_path / "admin.sock"
    running: list[TlsServer] = []

    def start(port: int | None = None) -> TlsServer:
        server = start_haproxy(tmp_path / "run", live, port=port, stats_socket=sock)
        running.append(server)
        return server

    start.live, start.socket, start.v0 = live, sock, v0  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for server in running:
            server.stop()


def _deliver(socket: Path, staged: Path, live: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CERTLOCKER), "--json", "deliver", "haproxy-runtime",
                           "--socket", str(socket), str(staged), str(live)],
                          capture_output=True, text=True, timeout=60)


def test_hot_update_serves_the_new_cert_without_reload_and_after_restart(
        haproxy, tmp_path: Path) -> None:
    server = haproxy()
    assert server.served_sha256() == haproxy.v0.sha256_fingerprint
    workers = _workers(server.pid)
    assert len(workers) == 1
    v1 = issue_test_chain("rsa")
    staged = tmp_path / "staged.pem"
    staged.write_text(_pem(v1))

    done = _deliver(haproxy.socket, staged, haproxy.live)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"crt_path": str(haproxy.live),
                                       "sha256": v1.sha256_fingerprint, "changed": True}
    assert server.served_sha256() == v1.sha256_fingerprint  # at once: no reload to wait for
    assert server.proc.poll() is None
    assert _workers(server.pid) == workers, "a new worker means HAProxy reloaded"
    assert haproxy.live.read_text() == _pem(v1)
    assert haproxy.live.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in done.stdout + done.stderr

    again = _deliver(haproxy.socket, staged, haproxy.live)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False

    port = server.port
    server.stop()
    assert _served_after_start(haproxy(port)) == v1.sha256_fingerprint


def test_memory_only_update_would_be_lost_at_restart_which_is_why_the_file_goes_first(
        haproxy) -> None:
    """The bare Runtime API changes memory only: shown here so the order in
    hot_update (file first) is not an accident."""
    server = haproxy()
    v1 = issue_test_chain()
    api = RuntimeApi(haproxy.socket)
    assert "Transaction created" in api.command(f"set ssl cert {haproxy.live}", _pem(v1))
    assert "Success!" in api.command(f"commit ssl cert {haproxy.live}")
    assert server.served_sha256() == v1.sha256_fingerprint
    port = server.port
    server.stop()
    assert _served_after_start(haproxy(port)) == haproxy.v0.sha256_fingerprint


def test_refusals_leave_file_and_memory_as_they_were(haproxy, tmp_path: Path) -> None:
    server = haproxy()
    api = RuntimeApi(haproxy.socket)
    before = haproxy.live.read_text()
    sha1_before = served_sha1(api, haproxy.live)
    v1, stranger = issue_test_chain(), issue_test_chain()

    mismatched = v1.certificate + v1.chain + stranger.private_key
    with pytest.raises(InvalidInput, match="does not match"):
        hot_update(api, haproxy.live, mismatched)

    unknown = tmp_path / "certs" / "not-in-config.pem"
    with pytest.raises(DeliveryFailed, match="not referenced by the configuration"):
        hot_update(api, unknown, _pem(v1))
    assert not unknown.exists()

    down = RuntimeApi(tmp_path / "no-such.sock")
    with pytest.raises(DeliveryFailed):
        hot_update(down, haproxy.live, _pem(v1))

    assert haproxy.live.read_text() == before
    assert served_sha1(api, haproxy.live) == sha1_before
    assert server.served_sha256() == haproxy.v0.sha256_fingerprint

    staged = tmp_path / "bad.pem"
    staged.write_text(mismatched)
    done = _deliver(haproxy.socket, staged, haproxy.live)
    assert done.returncode == 1
    assert "does not match" in done.stderr
    assert "PRIVATE KEY" not in done.stderr
    assert os.stat(haproxy.live).st_mode & 0o777 == 0o600
