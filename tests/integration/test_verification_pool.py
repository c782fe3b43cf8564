"""Served-certificate verification end to end: a certificate issued by Pebble through the
API, deployed into a pool of six real nginx nodes, renewed, the new certificate rolled out
to four nodes only; POST /verify must name exactly the two stale nodes. Then /metrics."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certlocker.delivery.verify import probe
from tests.support.nginx_pool import MiniCA, NginxPool, free_port
from tests.support.observability import Api, running_observability_stack
from tests.support.stack import CertlockerStack, devstack

pytestmark = pytest.mark.integration

NAME = "pool.verify.test"
POOL_IPS = tuple(f"127.0.0.{i}" for i in range(2, 8))
STALE_IPS = (POOL_IPS[1], POOL_IPS[4])
CERT_ID = "prod.pool-web.www"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertlockerStack]:
    with running_observability_stack(tmp_path_factory.mktemp("observability")) as s:
        yield s


def bundle(stack: CertlockerStack) -> tuple[bytes, bytes, str]:
    """fullchain, key and fingerprint of the current version (root token: test only)."""
    data = stack.client(stack.root_token).secrets.kv.v2.read_secret_version(
        path="certs/prod/pool-web/www", mount_point="certlocker",
        raise_on_deleted_version=True)["data"]["data"]
    return data["fullchain"].encode(), data["private_key"].encode(), data["sha256_fingerprint"]


def wait_served(address_ip: str, port: int, fingerprint: str) -> None:
    def serves() -> bool:
        try:
            return probe(f"{NAME}:{port}", NAME, address_ip, 2.0).sha256 == fingerprint
        except OSError:
            return False
    devstack.wait_until(serves, 20, what=f"{address_ip}:{port} to serve the new certificate")


class Scene:
    def __init__(self, stack: CertlockerStack, tmp: Path) -> None:
        self.api = Api(stack.api_url, stack.operator_token)
        self.port = free_port(POOL_IPS)
        self.other_port = free_port()
        resp = self.api("POST", "/v1/certificates?wait=90", json={
            "environment": "prod", "service": "pool-web", "name": "www", "dns_names": [NAME],
            "targets": [{"address": f"{NAME}:{self.port}", "ips": list(POOL_IPS)},
                        {"address": f"127.0.0.1:{self.other_port}", "sni": NAME}]})
        assert resp.status_code == 201, resp.text
        self.first = resp.json()
        fullchain, key, self.first_sha = bundle(stack)
        self.nginx = NginxPool(tmp / "nginx")
        self.sites = {ip: self.nginx.add(ip, self.port, fullchain, key) for ip in POOL_IPS}
        unrelated = MiniCA("unrelated").leaf([NAME])
        self.nginx.add("127.0.0.1", self.other_port, unrelated.pem, unrelated.key_pem)


@pytest.fixture(scope="module")
def scene(stack: CertlockerStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    s = Scene(stack, tmp_path_factory.mktemp("pool"))
    with s.nginx:
        yield s


def nodes(cert: dict) -> dict[str, str]:
    pool = next(t for t in cert["targets"] if t["ips"])
    return {n["address"]: n["status"] for n in pool["nodes"]}


def test_every_node_serving_the_issued_certificate_is_ok(scene: Scene) -> None:
    resp = scene.api("POST", f"/v1/certificates/{CERT_ID}/verify")
    assert resp.status_code == 200, resp.text
    cert = resp.json()
    assert set(nodes(cert).values()) == {"ok"} and len(nodes(cert)) == 6
    pool, other = cert["targets"]
    assert pool["status"] == "ok" and pool["served_sha256"] == scene.first_sha
    assert pool["checked_at"]
    assert other["status"] == "mismatch"


def test_after_a_partial_rollout_exactly_the_two_old_nodes_are_stale(
        scene: Scene, stack: CertlockerStack) -> None:
    resp = scene.api("POST", f"/v1/certificates/{CERT_ID}/renew?wait=90")
    assert resp.status_code == 200, resp.text
    renewed = resp.json()
    assert renewed["current"]["sha256_fingerprint"] != scene.first_sha
    fullchain, key, new_sha = bundle(stack)
    assert new_sha == renewed["current"]["sha256_fingerprint"]
    for ip in POOL_IPS:
        if ip not in STALE_IPS:
            scene.sites[ip] = scene.nginx.replace(scene.sites[ip], fullchain, key)
    scene.nginx.reload()
    for ip in POOL_IPS:
        if ip not in STALE_IPS:
            wait_served(ip, scene.port, new_sha)

    cert = scene.api("POST", f"/v1/certificates/{CERT_ID}/verify").json()
    expected = {f"{ip}:{scene.port}": "stale" if ip in STALE_IPS else "ok" for ip in POOL_IPS}
    assert nodes(cert) == expected
    pool, other = cert["targets"]
    assert pool["status"] == "stale"
    assert other["status"] == "mismatch"
    shown = scene.api("GET", f"/v1/certificates/{CERT_ID}").json()
    assert nodes(shown) == expected  # stored in status, not only answered

    [event] = scene.api("GET", "/v1/audit", params={
        "certificate": CERT_ID, "action": "delivery.verify", "limit": 1}).json()["items"]
    assert event["outcome"] == "failure"
    assert event["details"]["counts"] == {"mismatch": 1, "ok": 4, "stale": 2}
    assert event["details"]["sha256_fingerprint"] == new_sha
    audited = {t["address"]: t["status"] for t in event["details"]["targets"]}
    assert {a: s for a, s in audited.items() if a in expected} == expected


def test_verify_needs_a_token_that_may_read_the_spec(scene: Scene, stack) -> None:
    resp = Api(stack.api_url, "not-a-token")("POST", f"/v1/certificates/{CERT_ID}/verify")
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    missing = scene.api("POST", "/v1/certificates/prod.pool-web.nothing/verify")
    assert missing.status_code == 404


def scrape(stack: CertlockerStack) -> dict[str, list]:
    import requests

    resp = requests.get(f"{stack.api_url}/metrics", headers=stack.metrics_headers(),
                        timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_metrics_report_expiry_and_the_stale_nodes(scene: Scene, stack) -> None:
    cert = scene.api("GET", f"/v1/certificates/{CERT_ID}").json()
    not_after = dt.datetime.fromisoformat(cert["current"]["not_after"].replace("Z", "+00:00"))
    stale = {f"{ip}:{scene.port}" for ip in STALE_IPS}

    def current() -> dict[str, list] | None:
        metrics = scrape(stack)
        expiry = [s for s in metrics.get(
            "certlocker_certificate_expiration_timestamp_seconds", [])
            if s.labels["id"] == CERT_ID]
        states = {s.labels["address"]: s.labels["state"] for s in metrics.get(
            "certlocker_target_verification_state", []) if s.labels["id"] == CERT_ID}
        if expiry and expiry[0].value == not_after.timestamp() and {
                a for a, st in states.items() if st == "stale"} == stale:
            return metrics
        return None

    # Both gunicorn workers must agree: scrape until each has refreshed its summary.
    metrics = devstack.wait_until(current, 30, what="metrics to show the renewed cert")
    for _ in range(4):
        metrics = devstack.wait_until(current, 30, what="every worker to agree")
    [expiry] = [s for s in metrics["certlocker_certificate_expiration_timestamp_seconds"]
                if s.labels["id"] == CERT_ID]
    assert expiry.labels == {"id": CERT_ID, "environment": "prod", "service": "pool-web",
                             "certificate": "www", "name": CERT_ID, "issuer": "pebble"}
    ready = {s.labels["condition"]: s.value for s in metrics[
        "certlocker_certificate_ready_status"] if s.labels["id"] == CERT_ID}
    assert ready["True"] == 1.0
    # certlocker's own token: periodic (24 h from bootstrap), so it ends within a day.
    [token] = metrics["certlocker_vault_token_expiry_timestamp_seconds"]
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    assert now < token.value <= now + 24 * 3600
    # The stack's one reconciler (60 s ticks) has reported in, sweep and all: its first
    # tick may end after the tests above on a loaded machine (its start-up sweep verifies
    # the pool, whose stale nodes are asked again), so wait for it.
    metrics = devstack.wait_until(lambda: (lambda m: m if m.get(
        "certlocker_reconciler_last_sweep_timestamp_seconds") else None)(scrape(stack)),
        60, what="the reconciler's first heartbeat")
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    [tick] = metrics["certlocker_reconciler_last_tick_timestamp_seconds"]
    [sweep] = metrics["certlocker_reconciler_last_sweep_timestamp_seconds"]
    assert tick.labels == sweep.labels and tick.labels["reconciler"].endswith(
        f"-{reconciler_pid(stack)}")
    assert now - 180 < sweep.value <= tick.value <= now
    # Issued once, renewed once, possibly in different workers: multiprocess mode sums them.
    issued = sum(s.value for s in metrics["certlocker_issuance_duration_seconds_count"]
                 if s.labels["outcome"] == "success")
    assert issued >= 2


def reconciler_pid(stack: CertlockerStack) -> int:
    [proc] = [p for p in stack.stack.procs if p.name == "reconciler"]
    return int(proc.pid)
