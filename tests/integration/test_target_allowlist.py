"""The target allow-list against real parts: a private stack (OpenBao, Pebble, the API
under gunicorn, the reconciler) whose settings allow one address and port on
loopback and the ``*.oracle.test`` names, and plain TCP listeners that count every
connection they get.

- a team operator cannot declare a target at the OpenBao port (403 naming it and the rule);
- a spec written straight into Vault at a forbidden port is never probed, neither on
  request nor by the reconciler's schedule, until an administrator's Vault document
  allows it;
- a discovery scan outside the allow-list is refused before anything is dialled;
- a name is dialled at the address that was checked, even when DNS answers differently
  the next time.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
import requests

import devstack
from certlocker.delivery.target_policy import TargetPolicy
from certlocker.delivery.verify import verify_targets
from certlocker.discovery.scan import scan_endpoints
from certlocker.models import CertificateInfo, Target
from tests.support.kv import grant_names
from tests.support.stack import SHARED_PEBBLE_ENV
from tests.support.pools import threads

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

pytestmark = pytest.mark.integration

TEAM_POLICY = "certlocker-operator-team-payments"


class CountingListener:
    """A TCP listener on loopback that accepts, counts and closes every connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


class Private:
    def __init__(self, stack: devstack.Stack, allowed: CountingListener,
                 forbidden: CountingListener) -> None:
        self.stack = stack
        self.allowed = allowed  # its port is the one the settings allow
        self.forbidden = forbidden  # its port is not allowed
        self.http = requests.Session()

    def call(self, method: str, path: str, token: str | None = None,
             **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.stack.api_url + path, timeout=120, headers={
            "X-Vault-Token": token or self.stack.operator_token or ""}, **kwargs)

    def vault(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.stack.vault_addr, token=token or self.stack.root_token,
                           timeout=10)

    def team_token(self) -> str:
        created = self.vault().auth.token.create(policies=[TEAM_POLICY], ttl="1h")
        return created["auth"]["client_token"]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    allowed, forbidden = CountingListener(), CountingListener()
    stack = devstack.Stack(tmp_path_factory.mktemp("allowlist-stack"), devstack.free_ports(),
                           pebble_env=SHARED_PEBBLE_ENV, extra_env={
                               "CERTLOCKER_TARGETS__ALLOWED_NETWORKS": "127.0.0.1/32",
                               "CERTLOCKER_TARGETS__ALLOWED_PORTS": str(allowed.port),
                               "CERTLOCKER_TARGETS__ALLOWED_HOSTS": "*.oracle.test",
                               "CERTLOCKER_TARGETS__REFRESH_SECONDS": "0",
                               "CERTLOCKER_VERIFY_INTERVAL_SECONDS": "10",
                               "CERTLOCKER_RECONCILE_SWEEP_SECONDS": "5",
                           })
    stack.up()
    try:
        yield Private(stack, allowed, forbidden)
    finally:
        stack.down()
        allowed.close()
        forbidden.close()


def _problem(resp: requests.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["type"].startswith("https://")
    assert "Traceback" not in resp.text
    return body


def test_a_team_operator_cannot_point_a_target_at_the_openbao_port(private: Private) -> None:
    team = private.team_token()
    vault_target = f"127.0.0.1:{private.stack.ports['vault']}"
    body = _problem(private.call("POST", "/v1/certificates", team, json={
        "environment": "prod", "service": "payments-api", "name": "probe",
        "dns_names": ["probe.oracle.test"], "targets": [vault_target]}), 403)
    assert body["type"].endswith("/target-forbidden")
    assert body["target"] == vault_target and body["rule"] == "port"
    assert body["field"] == "targets/0" and vault_target in body["detail"]
    # nothing was declared
    with pytest.raises(hvac.exceptions.InvalidPath):
        private.vault().secrets.kv.v2.read_secret_version(
            path="specs/prod/payments-api/probe", mount_point="certlocker",
            raise_on_deleted_version=True)
    # the same operator, the same certificate, an allowed target (its name granted by an
    # administrator: name ownership is default deny): declared
    grant_names(private.vault(), "certlocker", "prod", "payments-api", ["probe.oracle.test"])
    ok = private.call("POST", "/v1/certificates", team, json={
        "environment": "prod", "service": "payments-api", "name": "probe",
        "dns_names": ["probe.oracle.test"], "targets": [private.allowed.address]})
    assert ok.status_code in (201, 202), ok.text
    # ... and cannot move it to the OpenBao port afterwards either
    moved = _problem(private.call("PATCH", "/v1/certificates/prod.payments-api.probe", team,
                                  json={"targets": [vault_target]}), 403)
    assert moved["type"].endswith("/target-forbidden") and moved["rule"] == "port"
    kept = private.vault().secrets.kv.v2.read_secret_version(
        path="specs/prod/payments-api/probe", mount_point="certlocker",
        raise_on_deleted_version=True)["data"]["data"]
    assert [t["address"] for t in kept["targets"]] == [private.allowed.address]


def test_a_spec_written_into_vault_at_a_forbidden_port_is_never_probed(
        private: Private) -> None:
    ref = "dev.oracle-cli.www"
    spec = {"environment": "dev", "service": "oracle-cli", "name": "www",
            "dns_names": ["www.oracle.test"], "issuer": "pebble", "key_type": "ec-p256",
            "renew_before": None, "owner": None, "contact": None,
            "targets": [{"address": private.forbidden.address, "sni": None, "ips": []}]}
    grant_names(private.vault(), "certlocker", "dev", "oracle-cli", ["www.oracle.test"])
    private.vault(private.stack.operator_token).secrets.kv.v2.create_or_update_secret(
        path="specs/dev/oracle-cli/www", secret=spec, mount_point="certlocker")
    renewed = private.call("POST", f"/v1/certificates/{ref}/renew?wait=90")
    assert renewed.status_code in (200, 201), renewed.text
    assert renewed.json()["current"] is not None

    verified = private.call("POST", f"/v1/certificates/{ref}/verify")
    assert verified.status_code == 200, verified.text
    (target,) = verified.json()["targets"]
    assert target["status"] == "forbidden" and target["served_sha256"] is None
    checked = target["checked_at"]
    assert checked is not None

    # the reconciler (a tick a minute, a full sweep each tick here, a verification due
    # every 10 s) verifies it again, still without a dial
    def rechecked() -> dict[str, Any] | None:
        cert = private.call("GET", f"/v1/certificates/{ref}").json()
        (now,) = cert["targets"]
        return now if now["checked_at"] != checked else None

    again = devstack.wait_until(rechecked, timeout=180, interval=1)
    assert again["status"] == "forbidden"
    assert private.forbidden.accepted == 0

    # An administrator allows the port in Vault: now it is dialled (and answers no TLS).
    private.vault(private.stack.operator_token).secrets.kv.v2.create_or_update_secret(
        path="specs/_system/target-policy", mount_point="certlocker",
        secret={"allowed_ports": [str(private.forbidden.port)]})
    try:
        allowed = private.call("POST", f"/v1/certificates/{ref}/verify")
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["targets"][0]["status"] == "unreachable"
        assert private.forbidden.accepted >= 1
        # the document lists no certificate
        listed = private.call("GET", "/v1/certificates")
        assert listed.status_code == 200, listed.text
    finally:
        private.vault().secrets.kv.v2.delete_metadata_and_all_versions(
            path="specs/_system/target-policy", mount_point="certlocker")


@pytest.mark.parametrize("endpoint, rule", [
    ("{forbidden}", "port"),
    ("127.0.0.1:443", "port"),
    ("127.0.0.4/30:{allowed}", "network"),  # only 127.0.0.1 is allowed
    ("localhost:{allowed}", "host"),
])
def test_a_scan_outside_the_allow_list_is_refused_before_any_dial(
        private: Private, endpoint: str, rule: str) -> None:
    endpoint = endpoint.format(forbidden=private.forbidden.address,
                               allowed=private.allowed.port)
    before = private.forbidden.accepted, private.allowed.accepted
    body = _problem(private.call("POST", "/v1/discovery/scans?wait=10", json={
        "endpoints": [endpoint], "timeout": 2}), 403)
    assert body["type"].endswith("/target-forbidden") and body["rule"] == rule
    assert (private.forbidden.accepted, private.allowed.accepted) == before


def test_a_scan_inside_the_allow_list_runs(private: Private) -> None:
    before = private.allowed.accepted
    resp = private.call("POST", "/v1/discovery/scans?wait=20", json={
        "endpoints": [private.allowed.address], "timeout": 2})
    assert resp.status_code == 201, resp.text
    assert resp.json()["state"] == "done"
    assert private.allowed.accepted > before


# -- the dial goes to the checked address ------------------------------------------------

INFO = CertificateInfo(serial="01", not_before=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
                       not_after=dt.datetime(2030, 4, 1, tzinfo=dt.timezone.utc),
                       sha256_fingerprint="aa" * 32, issuer="test")


@pytest.fixture()
def two_nodes() -> Iterator[tuple[CountingListener, CountingListener]]:
    good = CountingListener("127.0.0.2")
    bad = CountingListener("127.0.0.3", good.port)
    try:
        yield good, bad
    finally:
        good.close()
        bad.close()


class Rebinding:
    """A resolver that answers the allowed address first and the forbidden one after."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.answers[min(self.calls - 1, len(self.answers) - 1)]]


def test_verification_dials_the_address_it_checked(
        two_nodes: tuple[CountingListener, CountingListener]) -> None:
    good, bad = two_nodes
    policy = TargetPolicy.parse(["127.0.0.2/32"], [good.port], ["*.oracle.test"])
    resolver = Rebinding("127.0.0.2", "127.0.0.3")
    [result] = verify_targets(INFO, (), [Target(f"svc.oracle.test:{good.port}")],
                              now=INFO.not_before, timeout=2, policy=policy, resolve=resolver,
                              pool=PROBES)
    assert result.status == "unreachable"  # reached, but it speaks no TLS
    assert (good.accepted, bad.accepted, resolver.calls) == (1, 0, 1)
    # DNS now points the permitted name at a forbidden address: refused, never dialled
    [result] = verify_targets(INFO, (), [Target(f"svc.oracle.test:{good.port}")],
                              now=INFO.not_before, timeout=2, policy=policy, resolve=resolver,
                              pool=PROBES)
    assert result.status == "forbidden" and "127.0.0.3" in result.detail
    assert (good.accepted, bad.accepted) == (1, 0)


def test_a_scan_dials_the_address_it_checked(
        two_nodes: tuple[CountingListener, CountingListener]) -> None:
    good, bad = two_nodes
    policy = TargetPolicy.parse(["127.0.0.2/32"], [good.port], ["*.oracle.test"])
    resolver = Rebinding("127.0.0.2", "127.0.0.3")
    first, second = (scan_endpoints([("svc.oracle.test", good.port)], timeout=2,
                                    policy=policy, resolve=resolver,
                                    pool=PROBES)[0] for _ in range(2))
    assert first.reason == "tls-error" and second.reason == "forbidden"
    assert (good.accepted, bad.accepted) == (1, 0)
