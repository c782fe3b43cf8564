"""verify_targets against a real nginx serving real certificates on loopback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from certlocker.delivery.verify import TrustAnchors, verify_targets
from certlocker.models import CertificateInfo, Target
from tests.support.nginx_pool import Issued, MiniCA, NginxPool, free_port
from tests.support.pools import threads

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

pytestmark = pytest.mark.integration

NAME = "pool.example"
POOL_IPS = tuple(f"127.0.0.{i}" for i in range(2, 8))  # six nodes behind one name


def info(leaf: Issued) -> CertificateInfo:
    return CertificateInfo(serial=leaf.serial, not_before=leaf.cert.not_valid_before_utc,
                           not_after=leaf.cert.not_valid_after_utc,
                           sha256_fingerprint=leaf.sha256, issuer="test", dns_names=(NAME,))


class Scene:
    def __init__(self, tmp: Path) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.ca = MiniCA()
        self.current = self.ca.leaf([NAME])
        self.old = self.ca.leaf([NAME], not_before=now - dt.timedelta(days=60),
                                not_after=now + dt.timedelta(days=30))
        self.unrelated = self.ca.leaf(["other.example"])
        self.expired = self.ca.leaf([NAME], not_before=now - dt.timedelta(days=100),
                                    not_after=now - dt.timedelta(days=10))
        self.anchors = TrustAnchors([self.ca.root.cert])
        self.nginx = NginxPool(tmp / "nginx")

        self.pool_port = free_port(POOL_IPS)
        stale_ips = {POOL_IPS[1], POOL_IPS[4]}
        for ip in POOL_IPS:
            leaf = self.old if ip in stale_ips else self.current
            self.nginx.add(ip, self.pool_port, self.ca.fullchain(leaf), leaf.key_pem)
        self.stale_nodes = {f"{ip}:{self.pool_port}" for ip in stale_ips}

        def single(leaf: Issued, *, with_chain: bool = True) -> str:
            pem = self.ca.fullchain(leaf) if with_chain else leaf.pem
            return self.nginx.add("127.0.0.1", free_port(), pem, leaf.key_pem).address

        self.ok_addr = single(self.current)
        self.mismatch_addr = single(self.unrelated)
        self.expired_addr = single(self.expired)
        self.leaf_only_addr = single(self.current, with_chain=False)
        self.closed_addr = f"127.0.0.1:{free_port()}"

    def targets(self) -> list[Target]:
        return [
            Target(f"{NAME}:{self.pool_port}", sni=NAME, ips=POOL_IPS),
            Target(self.ok_addr, sni=NAME),
            Target(self.mismatch_addr, sni=NAME),
            Target(self.expired_addr, sni=NAME),
            Target(self.leaf_only_addr, sni=NAME),
            Target(self.closed_addr, sni=NAME),
        ]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    s = Scene(tmp_path_factory.mktemp("verify"))
    with s.nginx:
        yield s


def test_every_target_and_every_pool_node_gets_its_own_status(scene: Scene) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    results = verify_targets(info(scene.current), {scene.old.sha256}, scene.targets(),
                             now=now, timeout=3.0, anchors=scene.anchors, pool=PROBES)
    by_address = {r.address: r for r in results}
    assert len(results) == len(by_address) == len(POOL_IPS) + 5

    pool = [r for r in results if r.address.endswith(f":{scene.pool_port}")]
    assert [r.address for r in pool] == [f"{ip}:{scene.pool_port}" for ip in POOL_IPS]
    assert {r.address for r in pool if r.status == "stale"} == scene.stale_nodes
    assert {r.status for r in pool if r.address not in scene.stale_nodes} == {"ok"}
    assert all(r.detail and NAME in r.detail for r in pool)
    assert {r.served_sha256 for r in pool} == {scene.current.sha256, scene.old.sha256}

    assert by_address[scene.ok_addr].status == "ok"
    assert by_address[scene.ok_addr].served_sha256 == scene.current.sha256
    assert by_address[scene.mismatch_addr].status == "mismatch"
    assert by_address[scene.mismatch_addr].served_sha256 == scene.unrelated.sha256
    assert by_address[scene.expired_addr].status == "expired"
    assert by_address[scene.leaf_only_addr].status == "chain-incomplete"
    assert "intermediate" in (by_address[scene.leaf_only_addr].detail or "")
    assert by_address[scene.closed_addr].status == "unreachable"
    assert by_address[scene.closed_addr].served_sha256 is None
    assert all(r.checked_at == now for r in results)


def test_history_given_as_serials_finds_the_stale_nodes(scene: Scene) -> None:
    results = verify_targets(info(scene.current), [scene.old.serial], scene.targets()[:1],
                             now=dt.datetime.now(dt.timezone.utc), anchors=scene.anchors,
                             pool=PROBES)
    assert {r.address for r in results if r.status == "stale"} == scene.stale_nodes


def test_after_a_redeploy_the_old_certificate_becomes_the_expected_one(scene: Scene) -> None:
    """Swap roles: expecting the old cert makes the four current nodes mismatches."""
    results = verify_targets(info(scene.old), set(), scene.targets()[:1],
                             now=dt.datetime.now(dt.timezone.utc), anchors=scene.anchors,
                             pool=PROBES)
    statuses = sorted(r.status for r in results)
    assert statuses == ["mismatch"] * 4 + ["ok"] * 2


def test_without_the_private_root_a_full_chain_is_reported_incomplete(scene: Scene) -> None:
    results = verify_targets(info(scene.current), set(), [Target(scene.ok_addr, sni=NAME)],
                             now=dt.datetime.now(dt.timezone.utc),
                             anchors=TrustAnchors(), pool=PROBES)
    assert [r.status for r in results] == ["chain-incomplete"]


def test_two_hundred_listeners_are_all_checked(tmp_path: Path) -> None:
    ca = MiniCA()
    leaf = ca.leaf([NAME])
    ips = tuple(f"127.0.1.{i}" for i in range(1, 201))
    port = free_port(ips)
    nginx = NginxPool(tmp_path / "nginx")
    for ip in ips:
        nginx.add(ip, port, ca.fullchain(leaf), leaf.key_pem)
    with nginx:
        targets = [Target(f"{ip}:{port}", sni=NAME) for ip in ips]
        results = verify_targets(info(leaf), set(), targets,
                                 now=dt.datetime.now(dt.timezone.utc), timeout=5.0,
                                 parallelism=64, anchors=TrustAnchors([ca.root.cert]), pool=PROBES)
    assert [r.address for r in results] == [t.address for t in targets]
    assert {r.status for r in results} == {"ok"}
