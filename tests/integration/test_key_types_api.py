"""One certificate per key type through the API; the stored key checked in Vault with the
service's own credential (JWT login at auth/certlocker-<env>, role ``service``)."""

from __future__ import annotations

from typing import Any

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack import wait_until

pytestmark = pytest.mark.integration

ENV, SERVICE = "dev", "keytypes"
KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"]


def describe(key: Any) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}[key.curve.name]
    assert isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey))
    return f"rsa-{key.key_size}"


@pytest.fixture(scope="module")
def issued(certlocker_stack) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Declare one certificate per key type, wait until each is valid, then read every
    bundle from Vault with the service's token."""
    api, token = certlocker_stack.api_url, certlocker_stack.operator_token
    http = requests.Session()
    http.headers["X-Vault-Token"] = token
    for key_type in KEY_TYPES:
        name = key_type.replace("-", "")
        resp = http.post(f"{api}/v1/certificates?wait=60", timeout=90, json={
            "environment": ENV, "service": SERVICE, "name": name, "key_type": key_type,
            "dns_names": [f"{name}.{SERVICE}.{ENV}.test"]})
        assert resp.status_code in (200, 201, 202), resp.text

    def all_valid() -> bool:
        states = {}
        for key_type in KEY_TYPES:
            body = http.get(f"{api}/v1/certificates/{ENV}.{SERVICE}.{key_type.replace('-', '')}",
                            timeout=10).json()
            assert body["status"] != "failed", body
            states[key_type] = body["status"]
        return all(s == "valid" for s in states.values())

    wait_until(all_valid, 240, what="every key type to be issued")
    minted = http.post(f"{api}/v1/services/{ENV}/{SERVICE}/credentials", timeout=30)
    assert minted.status_code == 201, minted.text
    credential = minted.json()
    vault = hvac.Client(url=certlocker_stack.vault_addr, timeout=10)
    login = vault.auth.jwt.jwt_login(credential["vault"]["role"], credential["token"],
                                     use_token=False, path=credential["vault"]["auth_path"])
    service = hvac.Client(url=certlocker_stack.vault_addr,
                          token=login["auth"]["client_token"], timeout=10)
    bundles = {}
    for key_type in KEY_TYPES:
        secret = service.secrets.kv.v2.read_secret_version(
            path=f"certs/{ENV}/{SERVICE}/{key_type.replace('-', '')}", mount_point="certlocker",
            raise_on_deleted_version=True)
        bundles[key_type] = secret["data"]["data"]
    return bundles


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_the_stored_key_and_certificate_have_the_requested_type(
        issued: dict[str, dict[str, Any]], key_type: str) -> None:
    bundle = issued[key_type]
    key = serialization.load_pem_private_key(bundle["private_key"].encode(), password=None)
    leaf = x509.load_pem_x509_certificate(bundle["certificate"].encode())
    assert describe(key) == key_type
    assert describe(leaf.public_key()) == key_type
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki)
