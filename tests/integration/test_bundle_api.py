"""/v1/certificates/<id>/bundle and `certlocker fetch` against the real stack.

certlocker renders PKCS#12 / Java / DER ... itself, but reads the key only as the
service: it logs in to OpenBao with the JWT the caller presents and reads with that
token. So Vault decides: another service's JWT gets 403, an operator's token never
opens a key, and the short-lived service token is gone afterwards.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certlocker.delivery.formats import key_matches_certificate
from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

PASSWORD = "bundle test password 1"
CERTLOCKER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "certlocker"


class Api:
    def __init__(self, stack: CertlockerStack) -> None:
        self.stack = stack

    def operator(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        resp = requests.request(method, self.stack.api_url + path, json=body, timeout=120,
                                headers={"X-Vault-Token": self.stack.operator_token})
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def bundle(self, cert_id: str, body: dict[str, Any] | None = None, *,
               jwt: str | None = None, headers: dict[str, str] | None = None,
               query: str = "") -> requests.Response:
        hdrs = dict(headers or {})
        if jwt:
            hdrs["Authorization"] = f"Bearer {jwt}"
        url = f"{self.stack.api_url}/v1/certificates/{cert_id}/bundle{query}"
        if body is None:
            return requests.get(url, headers=hdrs, timeout=30)
        return requests.post(url, json=body, headers=hdrs, timeout=30)


@pytest.fixture(scope="module")
def api(certlocker_stack: CertlockerStack) -> Api:
    return Api(certlocker_stack)


@pytest.fixture(scope="module")
def cert(api: Api) -> dict[str, Any]:
    declared = api.operator("POST", "/v1/certificates?wait=60", {
        "environment": "prod", "service": "shop", "name": "e2e-bundle",
        "dns_names": ["bundle.shop.example.com"]})
    assert declared["status"] == "valid", declared
    return declared


@pytest.fixture(scope="module")
def shop_jwt(api: Api) -> str:
    return api.operator("POST", "/v1/services/prod/shop/credentials")["token"]


@pytest.fixture(scope="module")
def other_jwt(api: Api) -> str:
    return api.operator("POST", "/v1/services/prod/e2e-other/credentials")["token"]


def _problem(resp: requests.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    return resp.json()


def _leaf_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _openssl_info(path: Path, *extra: str) -> str:
    out = subprocess.run(["openssl", "pkcs12", "-info", "-noout", "-in", str(path),
                          "-passin", f"pass:{PASSWORD}", *extra],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_pkcs12_opens_with_the_password_and_holds_the_issued_leaf_and_its_key(
        api: Api, cert: dict[str, Any], shop_jwt: str, tmp_path: Path) -> None:
    resp = api.bundle(cert["id"], {"format": "pkcs12", "password": PASSWORD}, jwt=shop_jwt)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/x-pkcs12"
    assert resp.headers["Cache-Control"] == "no-store"
    key, leaf, chain = pkcs12.load_key_and_certificates(resp.content, PASSWORD.encode())
    assert leaf is not None and key is not None
    assert _leaf_sha256(leaf) == cert["current"]["sha256_fingerprint"]
    assert resp.headers["X-Certlocker-Sha256"] == cert["current"]["sha256_fingerprint"]
    assert key_matches_certificate(
        leaf.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode())
    assert chain, "the intermediates travel with the leaf"
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(resp.content, b"not the password at all")

    p12 = tmp_path / "modern.p12"
    p12.write_bytes(resp.content)
    info = _openssl_info(p12)
    assert "AES-256-CBC" in info and "3DES" not in info.upper().replace("-", "")


def test_legacy_pkcs12_is_3des(api: Api, cert: dict[str, Any], shop_jwt: str,
                               tmp_path: Path) -> None:
    resp = api.bundle(cert["id"], {"format": "pkcs12-legacy", "password": PASSWORD},
                      jwt=shop_jwt)
    assert resp.status_code == 200, resp.text
    p12 = tmp_path / "legacy.pfx"
    p12.write_bytes(resp.content)
    info = _openssl_info(p12, "-legacy")
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "AES-256" not in info
    _, leaf, _ = pkcs12.load_key_and_certificates(resp.content, PASSWORD.encode())
    assert leaf is not None and _leaf_sha256(leaf) == cert["current"]["sha256_fingerprint"]


def test_get_serves_the_text_and_binary_formats(api: Api, cert: dict[str, Any],
                                                shop_jwt: str) -> None:
    resp = api.bundle(cert["id"], jwt=shop_jwt, query="?format=haproxy")
    assert resp.status_code == 200, resp.text
    leaf = x509.load_pem_x509_certificates(resp.content)[0]
    assert _leaf_sha256(leaf) == cert["current"]["sha256_fingerprint"]
    assert b"PRIVATE KEY" in resp.content

    der = api.bundle(cert["id"], jwt=shop_jwt, query="?format=der")
    assert hashlib.sha256(der.content).hexdigest() == cert["current"]["sha256_fingerprint"]

    files = api.bundle(cert["id"], jwt=shop_jwt, query="?format=nginx").json()
    assert set(files) == {"fullchain.pem", "privkey.pem"}

    k8s = api.bundle(cert["id"], jwt=shop_jwt, query="?format=kubernetes").text
    assert "name: shop-e2e-bundle-tls" in k8s and "namespace: prod" in k8s

    via_header = api.bundle(cert["id"], jwt=shop_jwt, query="?format=java",
                            headers={"X-Certlocker-Password": PASSWORD})
    assert via_header.status_code == 200, via_header.text
    loaded = pkcs12.load_pkcs12(via_header.content, PASSWORD.encode())
    assert loaded.cert is not None and loaded.cert.friendly_name == b"e2e-bundle"


def test_another_services_credential_is_denied_by_vault(api: Api, cert: dict[str, Any],
                                                        other_jwt: str) -> None:
    problem = _problem(api.bundle(cert["id"], {"format": "haproxy"}, jwt=other_jwt), 403)
    assert cert["id"] in problem["detail"]


def test_operator_tokens_never_open_a_bundle(api: Api, cert: dict[str, Any]) -> None:
    token = api.stack.operator_token
    _problem(api.bundle(cert["id"], {"format": "haproxy"},
                        headers={"X-Vault-Token": token}), 403)
    _problem(api.bundle(cert["id"], {"format": "haproxy"}, jwt=token), 403)
    root = api.stack.root_token
    _problem(api.bundle(cert["id"], {"format": "haproxy"}, headers={"X-Vault-Token": root}),
             403)


def test_refused_requests_are_problems(api: Api, cert: dict[str, Any], shop_jwt: str) -> None:
    assert _problem(api.bundle(cert["id"], {"format": "zip"}, jwt=shop_jwt),
                    400)["field"] == "format"
    short = _problem(api.bundle(cert["id"], {"format": "pkcs12", "password": "short"},
                                jwt=shop_jwt), 400)
    assert short["field"] == "password" and "at least 12" in short["reason"]
    empty = _problem(api.bundle(cert["id"], {"format": "pkcs12", "password": ""},
                                jwt=shop_jwt), 400)
    assert "empty" in empty["reason"]
    missing = _problem(api.bundle(cert["id"], {"format": "pkcs12"}, jwt=shop_jwt), 400)
    assert missing["field"] == "password"
    in_url = _problem(api.bundle(cert["id"], jwt=shop_jwt,
                                 query=f"?format=pkcs12&password={PASSWORD}"), 400)
    assert PASSWORD not in json.dumps(in_url)
    _problem(api.bundle(cert["id"], {"format": "haproxy"}), 401)
    _problem(api.bundle(cert["id"], {"format": "haproxy"}, jwt=shop_jwt[:-6] + "AAAAAA"), 401)
    _problem(api.bundle("prod.shop.e2e-never-declared", {"format": "haproxy"},
                        jwt=shop_jwt), 404)


def test_a_revoked_credential_is_refused_at_vault_login(api: Api) -> None:
    api.operator("POST", "/v1/certificates?wait=60", {
        "environment": "prod", "service": "e2e-revoked", "name": "www",
        "dns_names": ["revoked.example.com"]})
    jwt = api.operator("POST", "/v1/services/prod/e2e-revoked/credentials")["token"]
    assert api.bundle("prod.e2e-revoked.www", {"format": "der"}, jwt=jwt).status_code == 200
    api.operator("DELETE", "/v1/services/prod/e2e-revoked/credentials")
    _problem(api.bundle("prod.e2e-revoked.www", {"format": "der"}, jwt=jwt), 401)


def _service_token_accessors(api: Api) -> set[str]:
    client = api.stack.client(api.stack.root_token)
    found = set()
    for accessor in client.list("auth/token/accessors")["data"]["keys"]:
        try:
            data = client.auth.token.lookup_accessor(accessor)["data"]
        except Exception:  # noqa: BLE001 - revoked between list and lookup
            continue
        if data.get("path") == "auth/certlocker-prod/login":
            found.add(accessor)
    return found


def test_the_service_token_certlocker_used_is_revoked(api: Api, cert: dict[str, Any],
                                                      shop_jwt: str) -> None:
    before = _service_token_accessors(api)
    assert api.bundle(cert["id"], {"format": "der"}, jwt=shop_jwt).status_code == 200
    assert api.bundle(cert["id"], {"format": "haproxy"}, jwt=api.operator(
        "POST", "/v1/services/prod/e2e-other/credentials")["token"]).status_code == 403
    assert _service_token_accessors(api) - before == set()


def test_certlocker_fetch_writes_0600_atomically_with_the_service_credential(
        api: Api, cert: dict[str, Any], shop_jwt: str, tmp_path: Path) -> None:
    jwt_file = tmp_path / "credential.jwt"
    jwt_file.write_text(shop_jwt + "\n")
    password_file = tmp_path / "p12.pass"
    password_file.write_text(PASSWORD + "\n")
    out = tmp_path / "out" / "shop.p12"
    out.parent.mkdir()
    env = dict(api.stack.env)  # VAULT_TOKEN is the operator's: fetch must not send it

    def fetch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CERTLOCKER), "fetch", cert["id"],
                               "--credential-file", str(jwt_file), *args],
                              capture_output=True, text=True, env=env, timeout=60)

    done = fetch("--format", "pkcs12", "--out", str(out), "--password-file",
                 str(password_file))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["shop.p12"]
    _, leaf, _ = pkcs12.load_key_and_certificates(out.read_bytes(), PASSWORD.encode())
    assert leaf is not None and _leaf_sha256(leaf) == cert["current"]["sha256_fingerprint"]
    assert cert["current"]["sha256_fingerprint"] in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    nginx_dir = tmp_path / "nginx"
    done = fetch("--format", "nginx", "--out", str(nginx_dir))
    assert done.returncode == 0, done.stderr
    assert nginx_dir.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in nginx_dir.iterdir()} == {
        "fullchain.pem": 0o600, "privkey.pem": 0o600}

    other = api.operator("POST", "/v1/services/prod/e2e-other/credentials")["token"]
    jwt_file.write_text(other)
    refused = fetch("--format", "der", "--out", str(tmp_path / "refused.der"))
    assert refused.returncode == 1
    assert "403" in refused.stderr
    assert not (tmp_path / "refused.der").exists()
