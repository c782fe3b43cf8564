"""The thin slice, end to end on real OpenBao and Pebble: an operator requests a
certificate over HTTP, certlocker obtains it over ACME (http-01 answered by certlocker),
stores it at the service's Vault path, mints the service a JWT, and with that JWT alone
the stock `bao` CLI reads the service's own certificate and nothing else."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.secrets import jwts_in

pytestmark = pytest.mark.integration


def declare(stack, service: str, name: str, names: list[str]) -> dict:
    resp = requests.post(
        f"{stack.api_url}/v1/certificates?wait=60",
        json={"environment": "prod", "service": service, "name": name, "dns_names": names},
        headers={"X-Vault-Token": stack.operator_token}, timeout=90)
    assert resp.status_code == 201, resp.text
    return resp.json()


def mint(stack, env: str, service: str) -> dict:
    resp = requests.post(f"{stack.api_url}/v1/services/{env}/{service}/credentials",
                         headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def bao(stack, args: list[str], token: str | None = None, stdin: str | None = None,
        home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"VAULT_ADDR": stack.vault_addr, "HOME": str(home or stack.state_dir),
           "PATH": "/usr/bin:/bin"}
    if token:
        env["VAULT_TOKEN"] = token
    return subprocess.run([_bao_binary(), *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=30)


def _bao_binary() -> str:
    import sys

    return str(Path(sys.executable).with_name("bao"))


@pytest.fixture(scope="module")
def issued(certlocker_stack):
    api = declare(certlocker_stack, "slice-api", "www", ["www.slice-api.test", "slice-api.test"])
    web = declare(certlocker_stack, "slice-web", "www", ["www.slice-web.test"])
    return api, web


def test_the_certificate_is_issued_and_described_by_the_contract(certlocker_stack, issued):
    cert, _ = issued
    assert cert["id"] == "prod.slice-api.www"
    assert (cert["environment"], cert["service"], cert["name"]) == ("prod", "slice-api", "www")
    assert cert["status"] == "valid"
    assert cert["dns_names"] == ["www.slice-api.test", "slice-api.test"]
    assert cert["vault"]["path"] == "certlocker/data/certs/prod/slice-api/www"
    assert set(cert["current"]) >= {"serial", "not_before", "not_after",
                                    "sha256_fingerprint", "issuer"}
    again = requests.get(f"{certlocker_stack.api_url}/v1/certificates/{cert['id']}",
                         headers={"X-Vault-Token": certlocker_stack.operator_token}, timeout=10)
    assert again.status_code == 200
    assert again.json()["current"] == cert["current"]


def test_vault_holds_the_bundle_the_design_promises(certlocker_stack, issued):
    cert, _ = issued
    root = certlocker_stack.client(certlocker_stack.root_token)
    data = root.secrets.kv.v2.read_secret_version(
        path="certs/prod/slice-api/www", mount_point="certlocker",
        raise_on_deleted_version=True)["data"]["data"]
    leaf = x509.load_pem_x509_certificate(data["certificate"].encode())
    key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    assert data["private_key"].startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == leaf.public_key().public_bytes(der, spki)
    assert data["fullchain"] == data["certificate"] + data["chain"]
    assert "BEGIN CERTIFICATE" in data["chain"]
    fingerprint = hashlib.sha256(leaf.public_bytes(der)).hexdigest()
    assert data["sha256_fingerprint"] == fingerprint == cert["current"]["sha256_fingerprint"]
    assert data["serial"] == format(leaf.serial_number, "x") == cert["current"]["serial"]
    assert data["not_after"] == cert["current"]["not_after"]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(cert["dns_names"])


def test_the_service_jwt_alone_reads_its_own_certificate_with_the_stock_cli(
        certlocker_stack, issued, tmp_path):
    cert, _ = issued
    credential = mint(certlocker_stack, "prod", "slice-api")
    assert credential["vault"] == {"auth_path": "certlocker-prod", "role": "service"}
    login = bao(certlocker_stack, ["write", "-field=token", "auth/certlocker-prod/login",
                                   "role=service", "jwt=-"], stdin=credential["token"],
                home=tmp_path)
    assert login.returncode == 0, login.stderr
    token = login.stdout.strip()

    own = bao(certlocker_stack, ["kv", "get", "-mount=certlocker", "-field=serial",
                                 "certs/prod/slice-api/www"], token=token, home=tmp_path)
    assert own.returncode == 0, own.stderr
    assert own.stdout.strip() == cert["current"]["serial"]

    other = bao(certlocker_stack, ["kv", "get", "-mount=certlocker",
                                   "certs/prod/slice-web/www"], token=token, home=tmp_path)
    assert other.returncode != 0
    assert "permission denied" in other.stderr


def test_a_second_services_credential_is_denied_the_first_services_path(
        certlocker_stack, issued):
    credential = mint(certlocker_stack, "prod", "slice-web")
    client = hvac.Client(url=certlocker_stack.vault_addr, timeout=10)
    client.auth.jwt.jwt_login(role="service", jwt=credential["token"], path="certlocker-prod")
    own = client.secrets.kv.v2.read_secret_version(
        path="certs/prod/slice-web/www", mount_point="certlocker",
        raise_on_deleted_version=True)
    assert own["data"]["data"]["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(
            path="certs/prod/slice-api/www", mount_point="certlocker",
            raise_on_deleted_version=True)


def test_certlocker_itself_cannot_read_back_a_private_key(certlocker_stack, issued):
    token = (certlocker_stack.state_dir / "certlocker.token").read_text().strip()
    client = certlocker_stack.client(token)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(
            path="certs/prod/slice-api/www", mount_point="certlocker",
            raise_on_deleted_version=True)


@pytest.mark.parametrize("body, field", [
    ({"service": "x", "name": "y", "dns_names": ["a.test"]}, "environment"),
    ({"environment": "prod", "name": "y", "dns_names": ["a.test"]}, "service"),
    ({"environment": "prod", "service": "x", "name": "y"}, "dns_names"),
    ({"environment": "prod", "service": "x", "name": "y", "dns_names": ["bad name.test"]},
     "dns_names/0"),
])
def test_missing_or_invalid_fields_get_a_problem_document(certlocker_stack, body, field):
    resp = requests.post(f"{certlocker_stack.api_url}/v1/certificates", json=body,
                         headers={"X-Vault-Token": certlocker_stack.operator_token}, timeout=10)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem = resp.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    assert problem["status"] == 400
    assert problem["field"] == field


def test_no_private_key_or_token_reaches_the_logs(certlocker_stack, issued):
    mint(certlocker_stack, "prod", "slice-api")  # a token exists in at least one answer
    logs = list(certlocker_stack.state_dir.glob("*.log"))
    assert logs, "the stack writes its server logs to the state dir"
    for log in logs:
        text = log.read_text(errors="replace")
        assert "PRIVATE KEY" not in text, log.name
        assert jwts_in(text) == [], log.name
