"""Retirement as a lifecycle stage, on the real stack (OpenBao, Pebble, nginx, the
certlocker API and reconciler): the certificate stays listed as retired with its history,
is revoked at the CA unless the operator says not to, takes the service's credentials
with it when it was the last, is reported where a node still serves it, and a
retirement interrupted mid-way is finished by the reconciler."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

import devstack
from certlocker.lifecycle.retirement import RetirementService
from certlocker.models import CertificateRef
from certlocker.paths import VaultPaths
from certlocker.vault.store import VaultStore
from tests.support.audit_trail import stored_events
from tests.support.nginx_pool import NginxPool, free_port

pytestmark = pytest.mark.integration

MOUNT = "certlocker"


def api(stack: Any, method: str, path: str, token: str | None = None,
        **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{stack.api_url}{path}", timeout=120,
                            headers={"X-Vault-Token": token or stack.operator_token}, **kwargs)


def declare(stack: Any, service: str, name: str = "www", **extra: Any) -> dict[str, Any]:
    resp = api(stack, "POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": service, "name": name,
        "dns_names": [f"{name}.{service}.test"], **extra})
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "valid", resp.text
    return resp.json()


def pebble_status(stack: Any, serial: str) -> str:
    context = ssl.create_default_context(cafile=str(stack.ca_bundle))
    url = f"{stack.env['PEBBLE_MGMT_URL']}/cert-status-by-serial/{serial}"
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        return json.loads(resp.read())["Status"]


def events(stack: Any, subject: str) -> list[dict[str, Any]]:
    root = stack.client(stack.root_token)
    return [e for e in stored_events(root, MOUNT) if e["subject"] == subject]


def gone(stack: Any, path: str) -> bool:
    root = stack.client(stack.root_token)
    try:
        root.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)
    except hvac.exceptions.InvalidPath:
        return True
    return False


def listed(stack: Any, **params: str) -> list[str]:
    resp = api(stack, "GET", "/v1/certificates", params=params)
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["items"]]


def test_a_retired_certificate_stays_listed_with_its_history_and_is_revoked(
        certlocker_stack: Any) -> None:
    stack = certlocker_stack
    first = declare(stack, "rtl")
    renewed = api(stack, "POST", "/v1/certificates/prod.rtl.www/renew?wait=60").json()
    assert renewed["current"]["serial"] != first["current"]["serial"]

    resp = api(stack, "DELETE", "/v1/certificates/prod.rtl.www")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "retired"
    assert body["retirement"]["phase"] == "done"
    assert body["retirement"]["reason"] == "cessationOfOperation"
    assert body["retirement"]["steps"]["revocation"] == "revoked"
    assert pebble_status(stack, renewed["current"]["serial"]) == "Revoked"

    shown = api(stack, "GET", "/v1/certificates/prod.rtl.www")
    assert shown.status_code == 200, shown.text
    shown = shown.json()
    assert shown["status"] == "retired" and shown["retired_at"]
    assert shown["dns_names"] == ["www.rtl.test"]
    assert shown["current"]["serial"] == renewed["current"]["serial"]
    assert first["current"]["sha256_fingerprint"] in shown["history"]
    assert "prod.rtl.www" in listed(stack, status="retired")
    assert "prod.rtl.www" in listed(stack, service="rtl")
    assert "prod.rtl.www" not in listed(stack, status="valid")
    assert gone(stack, "certs/prod/rtl/www") and gone(stack, "specs/prod/rtl/www")
    again = api(stack, "POST", "/v1/certificates/prod.rtl.www/renew")
    assert again.status_code == 409, again.text
    assert again.headers["Content-Type"].startswith("application/problem+json")

    actions = [e["action"] for e in events(stack, "prod.rtl.www")]
    for action in ("certificate.retire", "certificate.retire.revoke",
                   "certificate.retire.credentials", "certificate.versions.destroy",
                   "certificate.retire.verify"):
        assert action in actions, (action, actions)

    browser = requests.Session()
    login = browser.post(f"{stack.api_url}/login", data={"token": stack.operator_token},
                         timeout=60)
    assert login.status_code == 200, login.text
    # the dashboard's retired filter (its first page may be full of other certificates)
    shown = browser.get(f"{stack.api_url}/?status=retired&environment=prod", timeout=60)
    inventory = re.search(r'id="inventory".*?</section>', shown.text, re.S)
    assert inventory is not None and "prod.rtl.www" in inventory.group(0)


def test_the_operator_may_keep_the_certificate_valid_at_the_ca(certlocker_stack: Any) -> None:
    stack = certlocker_stack
    issued = declare(stack, "rtk")
    resp = api(stack, "DELETE", "/v1/certificates/prod.rtk.www", json={"revoke": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["retirement"]["steps"]["revocation"] == "not requested"
    assert resp.json()["retirement"]["reason"] is None
    assert pebble_status(stack, issued["current"]["serial"]) == "Valid"
    for kwargs, field in (({"json": {"revoke": "no"}}, "revoke"),
                          ({"json": {"revoke": False, "why": 1}}, "why"),
                          ({"params": {"revoke": "maybe"}}, "revoke"),
                          ({"params": {"force": "1"}}, "force")):
        bad = api(stack, "DELETE", "/v1/certificates/prod.rtk.www", **kwargs)
        assert bad.status_code == 400, (kwargs, bad.text)
        assert bad.headers["Content-Type"].startswith("application/problem+json")
        assert bad.json()["field"] == field
    for data, headers in (("[]", {"Content-Type": "application/json"}),
                          ("{", {"Content-Type": "application/json"}),
                          ("revoke=false", {"Content-Type": "text/plain"})):
        bad = requests.delete(f"{stack.api_url}/v1/certificates/prod.rtk.www", data=data,
                              headers={"X-Vault-Token": stack.operator_token, **headers},
                              timeout=60)
        assert 400 <= bad.status_code < 500, bad.text
        assert bad.headers["Content-Type"].startswith("application/problem+json")


def test_retiring_the_service_s_last_certificate_revokes_its_credentials(
        certlocker_stack: Any) -> None:
    stack = certlocker_stack
    declare(stack, "rtc", "a")
    declare(stack, "rtc", "b")
    minted = api(stack, "POST", "/v1/services/prod/rtc/credentials")
    assert minted.status_code == 201, minted.text
    jwt = minted.json()["token"]
    service = hvac.Client(url=stack.vault_addr, timeout=10)
    service.auth.jwt.jwt_login(role="service", jwt=jwt, path="certlocker-prod")

    first = api(stack, "DELETE", "/v1/certificates/prod.rtc.a")
    assert first.status_code == 200, first.text
    assert first.json()["retirement"]["steps"]["credentials"].startswith("kept")
    service.secrets.kv.v2.read_secret_version(path="certs/prod/rtc/b", mount_point=MOUNT,
                                              raise_on_deleted_version=True)

    last = api(stack, "DELETE", "/v1/certificates/prod.rtc.b")
    assert last.status_code == 200, last.text
    assert last.json()["retirement"]["steps"]["credentials"] == "revoked"
    with pytest.raises(hvac.exceptions.VaultError):
        hvac.Client(url=stack.vault_addr, timeout=10).auth.jwt.jwt_login(
            role="service", jwt=jwt, path="certlocker-prod")
    with pytest.raises(hvac.exceptions.VaultError):
        service.auth.token.lookup_self()
    assert any(e["action"] == "credential.revoke" for e in events(stack, "service:prod/rtc"))


def test_a_node_still_serving_a_retired_certificate_is_reported(
        certlocker_stack: Any, tmp_path: Path) -> None:
    stack = certlocker_stack
    port = free_port()
    address = f"127.0.0.1:{port}"
    declare(stack, "rts", targets=[{"address": address, "sni": "www.rts.test"}])
    root = stack.client(stack.root_token)
    bundle = root.secrets.kv.v2.read_secret_version(
        path="certs/prod/rts/www", mount_point=MOUNT, raise_on_deleted_version=True)
    bundle = bundle["data"]["data"]
    nginx = NginxPool(tmp_path / "nginx")
    nginx.add("127.0.0.1", port, bundle["fullchain"].encode(),
              bundle["private_key"].encode())
    with nginx:
        resp = api(stack, "DELETE", "/v1/certificates/prod.rts.www")
        assert resp.status_code == 200, resp.text
        assert resp.json()["retirement"]["phase"] == "verifying"
        assert resp.json()["retirement"]["targets"] == {address: "serving-retired"}
        shown = api(stack, "GET", "/v1/certificates/prod.rts.www").json()
        assert [t["status"] for t in shown["targets"]] == ["serving-retired"]

        scan = api(stack, "POST", "/v1/discovery/scans?wait=90", json={
            "endpoints": [address], "timeout": 5, "parallelism": 1})
        assert scan.status_code == 201, scan.text
        result = scan.json()["result"]
        assert [r["certificate_id"] for r in result["retired"]] == ["prod.rts.www"]
        assert result["managed"] == [] and result["counts"]["retired"] == 1
        assert result["counts"]["unmanaged"] == 0

    checked = api(stack, "POST", "/v1/certificates/prod.rts.www/verify")
    assert checked.status_code == 200, checked.text
    assert [t["status"] for t in checked.json()["targets"]] == ["unreachable"]
    assert checked.json()["retirement"]["phase"] == "done"
    verifications = [e for e in events(stack, "prod.rts.www")
                     if e["action"] == "certificate.retire.verify"]
    # one while nginx served it, one after (lanes are not in time order: sort)
    assert sorted(e["outcome"] for e in verifications) == ["failure", "success"]


class _Crash(BaseException):
    """The process dies here (nothing below it runs, nothing catches it)."""


class _DyingIssuer:
    def revoke(self, certificate_pem: str, reason: int) -> None:
        raise _Crash()


def test_a_retirement_interrupted_mid_way_is_finished_by_the_reconciler(
        certlocker_stack: Any) -> None:
    stack = certlocker_stack
    issued = declare(stack, "rtx")
    paths = VaultPaths()
    token = stack.stack.certlocker_token_file.read_text().strip()
    own = VaultStore.connect(stack.vault_addr, token, paths, own_token=True)
    operator = VaultStore.connect(stack.vault_addr, stack.operator_token, paths)
    dying = RetirementService(own, holder="test-crash", lease_ttl=0.5,
                              issuers={"pebble": _DyingIssuer()})
    with pytest.raises(_Crash):
        dying.retire(operator, CertificateRef("prod", "rtx", "www"), actor="crash-test")
    half = api(stack, "GET", "/v1/certificates/prod.rtx.www").json()
    assert half["status"] == "retired" and half["retirement"]["phase"] == "revoking"
    assert not gone(stack, "certs/prod/rtx/www")  # the material is still there
    assert pebble_status(stack, issued["current"]["serial"]) == "Valid"

    result = subprocess.run([devstack.certlocker_binary(), "reconcile", "--once"],
                            env=stack.stack.service_env(), capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]

    done = api(stack, "GET", "/v1/certificates/prod.rtx.www").json()
    assert done["retirement"]["phase"] == "done", done
    assert done["retirement"]["steps"]["revocation"] == "revoked"
    assert pebble_status(stack, issued["current"]["serial"]) == "Revoked"
    assert gone(stack, "certs/prod/rtx/www") and gone(stack, "system/retiring/prod/rtx/www")
    actions = [e["action"] for e in events(stack, "prod.rtx.www")]
    assert "certificate.retire.revoke" in actions
    assert "certificate.versions.destroy" in actions
