"""Revocation and retirement on the real stack (OpenBao, Pebble, certlocker API): the CA
really revokes, the replacement has a new key, and the service's own token can no longer
read the compromised key from any KV version."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.audit_trail import stored_events

pytestmark = pytest.mark.integration

MOUNT = "certlocker"


def api(stack, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
    return requests.request(method, f"{stack.api_url}{path}", timeout=120,
                            headers={"X-Vault-Token": token or stack.operator_token}, **kwargs)


def declare(stack, service: str, name: str, dns: str) -> dict:
    resp = api(stack, "POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": service, "name": name, "dns_names": [dns]})
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "valid", resp.text
    return resp.json()


def service_token(stack, service: str) -> str:
    minted = api(stack, "POST", f"/v1/services/prod/{service}/credentials")
    assert minted.status_code == 201, minted.text
    client = hvac.Client(url=stack.vault_addr, timeout=10)
    client.auth.jwt.jwt_login(role="service", jwt=minted.json()["token"], path="certlocker-prod")
    return client.token


def bundle(stack, path: str, version: int | None = None) -> dict:
    root = stack.client(stack.root_token)
    return root.secrets.kv.v2.read_secret_version(
        path=path, version=version, mount_point=MOUNT, raise_on_deleted_version=True)["data"]


def pebble_status(stack, serial: str) -> str:
    context = ssl.create_default_context(cafile=str(stack.ca_bundle))
    url = f"{stack.env['PEBBLE_MGMT_URL']}/cert-status-by-serial/{serial}"
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        return json.loads(resp.read())["Status"]


def spki(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def compromised(certlocker_stack):
    """A certificate renewed once (two KV versions), then revoked for keyCompromise."""
    stack = certlocker_stack
    first = declare(stack, "rvk", "www", "www.rvk.test")
    renewed = api(stack, "POST", "/v1/certificates/prod.rvk.www/renew?wait=60").json()
    assert renewed["current"]["serial"] != first["current"]["serial"]
    token = service_token(stack, "rvk")
    before = bundle(stack, "certs/prod/rvk/www")
    resp = api(stack, "POST", "/v1/certificates/prod.rvk.www/revoke?wait=90",
               json={"reason": "keyCompromise"})
    return {"before": before, "revoked": renewed, "response": resp, "token": token,
            "first": first}


def test_the_ca_reports_the_serial_revoked(certlocker_stack, compromised):
    assert compromised["response"].status_code == 200, compromised["response"].text
    serial = compromised["revoked"]["current"]["serial"]
    assert pebble_status(certlocker_stack, serial) == "Revoked"


def test_the_revocation_is_recorded_and_a_replacement_with_a_new_key_is_issued(
        certlocker_stack, compromised):
    body = compromised["response"].json()
    assert body["revocation"]["reason"] == "keyCompromise"
    assert body["revocation"]["serial"] == compromised["revoked"]["current"]["serial"]
    assert body["revocation"]["replace"] is True
    assert body["revocation"]["phase"] == "done"
    shown = api(certlocker_stack, "GET", "/v1/certificates/prod.rvk.www").json()
    assert shown["status"] == "valid"
    assert shown["current"]["serial"] != body["revocation"]["serial"]
    now = bundle(certlocker_stack, "certs/prod/rvk/www")["data"]
    assert now["serial"] == shown["current"]["serial"]
    assert spki(now["certificate"]) != spki(compromised["before"]["data"]["certificate"])
    assert pebble_status(certlocker_stack, now["serial"]) == "Valid"


def test_every_older_version_is_destroyed(certlocker_stack, compromised):
    root = certlocker_stack.client(certlocker_stack.root_token)
    meta = root.secrets.kv.v2.read_secret_metadata(path="certs/prod/rvk/www",
                                                   mount_point=MOUNT)["data"]
    current = meta["current_version"]
    assert current >= 3
    for version, info in meta["versions"].items():
        assert info["destroyed"] is (int(version) != current), (version, info)


def test_the_service_cannot_read_the_compromised_key_any_more(certlocker_stack, compromised):
    client = hvac.Client(url=certlocker_stack.vault_addr, token=compromised["token"], timeout=10)
    path = "certs/prod/rvk/www"
    latest = client.secrets.kv.v2.read_secret_version(path=path, mount_point=MOUNT,
                                                      raise_on_deleted_version=True)
    assert latest["data"]["data"]["serial"] != compromised["revoked"]["current"]["serial"]
    for version in (1, compromised["before"]["metadata"]["version"]):
        try:
            old = client.secrets.kv.v2.read_secret_version(path=path, version=version,
                                                           mount_point=MOUNT,
                                                           raise_on_deleted_version=False)
        except hvac.exceptions.InvalidPath:
            continue
        assert old["data"]["data"] is None, version


def test_the_audit_trail_records_the_revocation(certlocker_stack, compromised):
    root = certlocker_stack.client(certlocker_stack.root_token)
    actions = [json.dumps(e) for e in stored_events(root, MOUNT)]
    revoked = [a for a in actions if "certificate.revoke" in a and "prod.rvk.www" in a]
    assert any("keyCompromise" in a for a in revoked)
    assert any("certificate.versions.destroy" in a for a in actions)


def test_revocation_without_replacement_removes_the_material(certlocker_stack):
    declare(certlocker_stack, "rvk-gone", "www", "www.rvk-gone.test")
    resp = api(certlocker_stack, "POST", "/v1/certificates/prod.rvk-gone.www/revoke?wait=60",
               json={"reason": "cessationOfOperation"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "revoked"
    assert resp.json()["revocation"]["replace"] is False
    assert pebble_status(certlocker_stack, resp.json()["revocation"]["serial"]) == "Revoked"
    root = certlocker_stack.client(certlocker_stack.root_token)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_metadata(path="certs/prod/rvk-gone/www",
                                                mount_point=MOUNT)
    again = api(certlocker_stack, "POST", "/v1/certificates/prod.rvk-gone.www/revoke",
                json={"reason": "cessationOfOperation"})
    assert again.status_code == 409
    assert again.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize("body, field", [
    ({"reason": "certificateHold"}, "reason"),
    ({"reason": "bored"}, "reason"),
    ({}, "reason"),
    ({"reason": "superseded", "replace": "yes"}, "replace"),
    ({"reason": "superseded", "extra": 1}, "extra"),
])
def test_bad_revocation_requests_are_problems(certlocker_stack, body, field):
    resp = api(certlocker_stack, "POST", "/v1/certificates/prod.rvk.www/revoke", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == field


def test_vault_decides_who_may_revoke_and_retire(certlocker_stack, compromised):
    root = certlocker_stack.client(certlocker_stack.root_token)
    payments = root.auth.token.create(policies=["certlocker-operator-team-payments"],
                                      ttl="10m")["auth"]["client_token"]
    resp = api(certlocker_stack, "POST", "/v1/certificates/prod.rvk.www/revoke",
               token=payments, json={"reason": "superseded"})
    assert resp.status_code == 403, resp.text
    resp = api(certlocker_stack, "DELETE", "/v1/certificates/prod.rvk.www", token=payments)
    assert resp.status_code == 403, resp.text
    assert api(certlocker_stack, "GET", "/v1/certificates/prod.rvk.www").json()["status"] \
        == "valid"


def test_retirement_destroys_material_and_keeps_a_tombstone(certlocker_stack):
    first = declare(certlocker_stack, "rtr", "www", "www.rtr.test")
    resp = api(certlocker_stack, "DELETE", "/v1/certificates/prod.rtr.www")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "retired" and body["retired_at"]
    assert body["last"]["serial"] == first["current"]["serial"]
    root = certlocker_stack.client(certlocker_stack.root_token)
    for path in ("certs/prod/rtr/www", "specs/prod/rtr/www", "system/inflight/prod/rtr/www"):
        with pytest.raises(hvac.exceptions.InvalidPath):
            root.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)
    status = root.secrets.kv.v2.read_secret_version(
        path="status/prod/rtr/www", mount_point=MOUNT,
        raise_on_deleted_version=True)["data"]["data"]
    assert status["state"] == "retired"
    assert status["current"]["sha256_fingerprint"] == first["current"]["sha256_fingerprint"]
    shown = api(certlocker_stack, "GET", "/v1/certificates/prod.rtr.www")
    assert shown.status_code == 200 and shown.json()["status"] == "retired"
    again = api(certlocker_stack, "DELETE", "/v1/certificates/prod.rtr.www")
    assert again.status_code == 200 and again.json()["status"] == "retired"
    assert api(certlocker_stack, "DELETE", "/v1/certificates/prod.rtr.nothing").status_code \
        == 404


def test_old_versions_are_pruned_past_keep_versions(certlocker_stack):
    declare(certlocker_stack, "prn", "www", "www.prn.test")
    for _ in range(3):
        resp = api(certlocker_stack, "POST", "/v1/certificates/prod.prn.www/renew?wait=60")
        assert resp.json()["status"] == "valid", resp.text
    root = certlocker_stack.client(certlocker_stack.root_token)
    meta = root.secrets.kv.v2.read_secret_metadata(path="certs/prod/prn/www",
                                                   mount_point=MOUNT)["data"]
    assert meta["current_version"] == 4
    live = sorted(int(v) for v, i in meta["versions"].items() if not i["destroyed"])
    assert live == [2, 3, 4]  # keep_versions defaults to 3


def test_cleanup_lists_status_without_spec(certlocker_stack):
    declare(certlocker_stack, "orph", "www", "www.orph.test")
    root = certlocker_stack.client(certlocker_stack.root_token)
    root.secrets.kv.v2.delete_metadata_and_all_versions(path="specs/prod/orph/www",
                                                        mount_point=MOUNT)
    resp = api(certlocker_stack, "GET", "/v1/certificates/cleanup")
    assert resp.status_code == 200, resp.text
    items = {i["id"]: i for i in resp.json()["items"]}
    assert items["prod.orph.www"]["kind"] == "unmanaged"
    assert items["prod.orph.www"]["live_versions"] == 1
    assert "prod.rtr.www" not in items or items["prod.rtr.www"]["kind"] != "unmanaged"


def test_the_cli_revokes_and_retires(certlocker_stack):
    declare(certlocker_stack, "clirv", "www", "www.clirv.test")
    cli = str(Path(sys.executable).with_name("certlocker"))
    out = subprocess.run([cli, "--json", "revoke", "prod.clirv.www", "--yes", "--reason",
                          "superseded", "--no-replace"], env=certlocker_stack.env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["revocation"]["reason"] == "superseded"
    out = subprocess.run([cli, "retire", "prod.clirv.www", "--yes"],
                         env=certlocker_stack.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "retired" in out.stdout
