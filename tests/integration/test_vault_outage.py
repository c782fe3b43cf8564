"""Vault sealed for a while: the reconciler backs off and resumes, the API says 503.

A private stack (free ports) whose own reconciler is stopped. The OpenBao dev server is
sealed with ``bao operator seal`` and unsealed with the unseal key it printed in its log.
Specs are written straight into Vault with the root token, before the outage.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from typing import Any, Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.kv import grant_names, live_versions
from tests.support.stack import Stack, devstack, free_port, log_events

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
SERVICE = "outage"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("outage-stack"), devstack.free_ports(),
                  pebble_env={"PEBBLE_WFE_NONCEREJECT": "0"})
    stack.up()
    try:
        for proc in stack.procs:
            if proc.name == "reconciler":
                proc.stop()  # this test runs its own, across the outage
        yield stack
    finally:
        stack.down()


def root(stack: Stack) -> Any:
    import hvac

    return hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)


def bao(stack: Stack, *args: str) -> None:
    assert stack.root_token is not None
    env = {k: v for k, v in devstack._base_env().items()
           if k not in ("VAULT_TOKEN", "BAO_TOKEN")}
    env.update({"BAO_ADDR": stack.vault_addr, "VAULT_ADDR": stack.vault_addr,
                "BAO_TOKEN": stack.root_token, "HOME": str(stack.state_dir / "bao-home")})
    result = subprocess.run([devstack.find_binary("bao"), *args], env=env, text=True,
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr


def unseal_key(stack: Stack) -> str:
    found = re.search(r"Unseal Key: (\S+)", (stack.state_dir / "openbao.log").read_text())
    assert found, "the dev server printed no unseal key"
    return found.group(1)


def sealed(stack: Stack) -> bool:
    return bool(requests.get(f"{stack.vault_addr}/v1/sys/seal-status",
                             timeout=10).json()["sealed"])


def write_spec(stack: Stack, name: str) -> None:
    grant_names(root(stack), MOUNT, "dev", SERVICE, [f"{name}.{SERVICE}.test"])
    root(stack).secrets.kv.v2.create_or_update_secret(
        mount_point=MOUNT, path=f"specs/dev/{SERVICE}/{name}",
        secret={"environment": "dev", "service": SERVICE, "name": name,
                "dns_names": [f"{name}.{SERVICE}.test"], "issuer": "pebble",
                "key_type": "ec-p256"})


def status(stack: Stack, name: str) -> dict[str, Any] | None:
    import hvac.exceptions

    try:
        return root(stack).secrets.kv.v2.read_secret_version(
            mount_point=MOUNT, path=f"status/dev/{SERVICE}/{name}",
            raise_on_deleted_version=True)["data"]["data"]
    except hvac.exceptions.InvalidPath:
        return None


def cert_versions(stack: Stack, name: str) -> int:
    return live_versions(root(stack), MOUNT, f"certs/dev/{SERVICE}/{name}")


def operator(stack: Stack, method: str, path: str, **kwargs: Any) -> requests.Response:
    assert stack.operator_token is not None
    return requests.request(method, stack.api_url + path, timeout=60,
                            headers={"X-Vault-Token": stack.operator_token}, **kwargs)


def served_fingerprint(stack: Stack, cert_id: str, jwt: str) -> str:
    resp = requests.get(f"{stack.api_url}/v1/certificates/{cert_id}/bundle?format=haproxy",
                        headers={"Authorization": f"Bearer {jwt}"}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert b"PRIVATE KEY" in resp.content
    leaf = x509.load_pem_x509_certificates(resp.content)[0]
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_sealed_vault_backs_off_then_everything_is_issued_once_and_served(
        stack: Stack) -> None:
    # Before the outage: one certificate issued and fetched by its service.
    write_spec(stack, "before")
    done = subprocess.run([devstack.certlocker_binary(), "reconcile", "--once"],
                          env=stack.service_env(), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    before = status(stack, "before")
    assert before is not None and before["state"] == "valid", before
    assert cert_versions(stack, "before") == 1
    cert_id = f"dev.{SERVICE}.before"
    minted = operator(stack, "POST", f"/v1/services/dev/{SERVICE}/credentials")
    assert minted.status_code < 300, minted.text
    jwt = minted.json()["token"]
    fingerprint = before["current"]["sha256_fingerprint"]
    assert served_fingerprint(stack, cert_id, jwt) == fingerprint

    pending = [f"p{i}" for i in range(4)]
    for name in pending:
        write_spec(stack, name)

    bao(stack, "operator", "seal")
    assert sealed(stack)
    spawned: list[devstack.Proc] = []
    try:
        try:
            # The API: 503 problem documents, never a 500; ready says no, alive says yes.
            resp = operator(stack, "GET", f"/v1/certificates/{cert_id}")
            assert resp.status_code == 503, resp.text
            assert resp.headers["Content-Type"] == "application/problem+json"
            assert resp.json()["status"] == 503
            # Said plainly, and not after riding out vault_retry_seconds per Vault call
            # as for an election: a seal lasts until someone unseals.
            assert "Vault is sealed" in resp.json()["detail"], resp.text
            assert requests.get(f"{stack.api_url}/readyz", timeout=30).status_code == 503
            assert requests.get(f"{stack.api_url}/healthz", timeout=30).status_code == 200

            # An API started while Vault is sealed (a restart, a replaced worker) stays
            # up and says so, instead of failing to boot and taking gunicorn with it.
            late_port = free_port()
            spawned.append(devstack.spawn_api("sealed-api", late_port,
                                              stack.state_dir / "sealed-api.log",
                                              stack.service_env(), threads=4))
            late_api = f"http://127.0.0.1:{late_port}"
            devstack.wait_http(f"{late_api}/readyz", 60, status=503, proc=spawned[0])
            for path in ("/.well-known/jwks.json", f"/v1/certificates/{cert_id}"):
                resp = requests.get(late_api + path, timeout=30,
                                    headers={"X-Vault-Token": stack.operator_token or ""})
                assert resp.status_code == 503, (path, resp.text)
                assert resp.json()["type"].endswith("/vault-unavailable"), resp.text
                assert "sealed" in resp.json()["detail"], resp.text
            assert spawned[0].alive(), spawned[0].log_tail()
            assert not log_events(spawned[0], "vault.retry"), "a sealed Vault was waited for"

            spawned.append(devstack.Proc.spawn(
                "outage-reconciler",
                [devstack.certlocker_binary(), "reconcile", "--interval", "1"],
                stack.state_dir / "outage-reconciler.log", env=stack.service_env(),
                marker="reconcile"))
            reconciler = spawned[1]
            devstack.wait_until(
                lambda: len(log_events(reconciler, "reconcile.vault_unavailable")) >= 3,
                120, interval=0.2, what="three back-off messages")
            assert reconciler.alive(), reconciler.log_tail()
            waits = [e["retry_in"] for e in log_events(reconciler, "reconcile.vault_unavailable")]
            assert waits[:3] == sorted(waits[:3]) and waits[2] > waits[0], waits
            assert not log_events(reconciler, "certificate.issued")
        finally:
            bao(stack, "operator", "unseal", unseal_key(stack))
        late_api_proc, reconciler = spawned
        assert not sealed(stack)
        # Nothing was written while sealed (it could not be), and nothing stale shows as new.
        assert [cert_versions(stack, n) for n in pending] == [0] * len(pending)

        def all_valid() -> bool:
            states = [status(stack, n) for n in pending]
            return all(s is not None and s.get("state") == "valid" for s in states)

        devstack.wait_until(all_valid, 300, interval=0.5, what="every certificate valid")
        assert reconciler.alive(), reconciler.log_tail()
        # The API started during the outage serves now, keys and all.
        devstack.wait_http(f"{late_api}/readyz", 60, proc=late_api_proc)
        late_mint = requests.post(f"{late_api}/v1/services/dev/{SERVICE}/credentials",
                                  headers={"X-Vault-Token": stack.operator_token or ""},
                                  timeout=60)
        assert late_mint.status_code == 201, late_mint.text
        assert served_fingerprint(stack, cert_id, late_mint.json()["token"]) == fingerprint
    finally:
        for proc in spawned:
            proc.stop()
    assert [cert_versions(stack, n) for n in pending] == [1] * len(pending)
    issued = sorted(e["certificate"] for e in log_events(reconciler, "certificate.issued"))
    assert issued == sorted(f"dev.{SERVICE}.{n}" for n in pending)

    # The certificate in service before the outage stayed: same version, same bundle.
    after = status(stack, "before")
    assert after is not None and after["state"] == "valid"
    assert after["current"]["sha256_fingerprint"] == fingerprint
    assert cert_versions(stack, "before") == 1
    devstack.wait_until(lambda: requests.get(f"{stack.api_url}/readyz", timeout=30)
                        .status_code == 200, 60, what="/readyz back to 200")
    assert served_fingerprint(stack, cert_id, jwt) == fingerprint
