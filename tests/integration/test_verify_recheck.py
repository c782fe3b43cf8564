"""Probing a stale node again must not hide real divergence: two real nginx behind a real
HAProxy in TCP round-robin (one address, a pool whose members differ), one serving the
renewed certificate and one the older. Every recheck lands on alternating members, so the
address stays ``stale`` and says on how many handshakes. (That a node mid-reload is
reported by what it serves afterwards is scripted in tests/unit/test_verify_recheck.py:
nginx's reload window is too short to hit on purpose.)"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from certlocker.delivery.verify import TrustAnchors, verify_targets
from certlocker.models import CertificateInfo, Target
from tests.support.tls_servers import (IssuedChain, TlsServer, free_port, issue_test_chain,
                                       start_nginx, wait_for_port)
from tests.support.pools import threads

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

pytestmark = pytest.mark.integration


def info(chain: IssuedChain) -> CertificateInfo:
    leaf = x509.load_pem_x509_certificate(chain.certificate.encode())
    return CertificateInfo(serial=format(leaf.serial_number, "x"),
                           not_before=leaf.not_valid_before_utc,
                           not_after=leaf.not_valid_after_utc,
                           sha256_fingerprint=chain.sha256_fingerprint, issuer="test-ca")


def nginx_serving(workdir: Path, chain: IssuedChain) -> TlsServer:
    workdir.mkdir(parents=True)
    pem = workdir / "site.pem"
    pem.write_text(chain.fullchain + chain.private_key)
    return start_nginx(workdir, pem)


@pytest.fixture
def round_robin(tmp_path: Path) -> Iterator[tuple[int, IssuedChain, IssuedChain]]:
    old, new = issue_test_chain(), issue_test_chain()
    servers = [nginx_serving(tmp_path / "old", old), nginx_serving(tmp_path / "new", new)]
    port = free_port()
    cfg, log = tmp_path / "lb.cfg", tmp_path / "lb.log"
    cfg.write_text(f"""
defaults
    mode tcp
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend lb
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    server old 127.0.0.1:{servers[0].port}
    server new 127.0.0.1:{servers[1].port}
""")
    with open(log, "ab") as logf:
        lb = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(cfg)],
                              stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    try:
        wait_for_port(port, lb, log)  # one connection: it went to "old"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # and "new"
        yield port, old, new
    finally:
        lb.terminate()
        lb.wait(10)
        for server in servers:
            server.stop()


def test_a_pool_where_one_member_kept_the_old_certificate_stays_stale(
        round_robin: tuple[int, IssuedChain, IssuedChain]) -> None:
    port, old, new = round_robin
    anchors = TrustAnchors.from_pem(old.root + new.root, include_system=False)
    [result] = verify_targets(info(new), {old.sha256_fingerprint},
                              [Target(f"127.0.0.1:{port}", sni="localhost")],
                              now=dt.datetime.now(dt.timezone.utc), anchors=anchors,
                              recheck_pause=0.1, pool=PROBES)
    # old, new, old, new: the first handshake meets "old", and so do half the rechecks.
    assert result.status == "stale", result
    assert result.served_sha256 == old.sha256_fingerprint
    assert result.detail is not None and result.detail.endswith("on 2 of 4 handshakes")
