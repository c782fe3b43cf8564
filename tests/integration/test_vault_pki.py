"""Internal CAs: the ``vault-pki`` issuer (CSR to ``<mount>/sign/<role>``) and an ``acme``
issuer pointed at OpenBao PKI's own ACME directory, both against a real OpenBao.

One private stack: OpenBao with a root CA (``pki-root``) and an intermediate
(``pki-int``, role ``internal`` for ``*.internal.test``, ACME enabled with challtestsrv as
its resolver), certlocker configured with both issuers through ``Stack(extra_env=...)``.
OpenBao's ACME validates http-01 at ``http://<name>:80/`` (the port is not configurable,
only the resolver), so the API listens on port 80 when it is free; otherwise the ACME test
is skipped with that reason.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import hvac
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import devstack
from certlocker import settings as settings_mod
from certlocker.vault.bootstrap import Bootstrapper
from certlocker.x509info import split_pem_chain
from tests.support import acme_direct
from tests.support.kv import grant_names
from tests.support.stack import SHARED_PEBBLE_ENV

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROOT_MOUNT, INT_MOUNT, ROLE = "pki-root", "pki-int", "internal"


def _port_80_free() -> bool:
    with socket.socket() as sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 80))
        except OSError:
            return False
    return True


class PkiStack:
    def __init__(self, stack: devstack.Stack) -> None:
        self.stack = stack
        self.root = hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.stack.api_url + path, data=data, method=method,
                                     headers={"X-Vault-Token": self.stack.operator_token or "",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stored(self, cert_id: str) -> dict[str, str]:
        env, service, name = cert_id.split(".")
        return self.root.secrets.kv.v2.read_secret_version(
            f"certs/{env}/{service}/{name}", mount_point="certlocker",
            raise_on_deleted_version=True)["data"]["data"]

    def root_ca(self) -> x509.Certificate:
        pem = self.root.read(f"{ROOT_MOUNT}/cert/ca")["data"]["certificate"]
        return x509.load_pem_x509_certificate(pem.encode())


def _setup_pki(client: hvac.Client, vault_addr: str, dns: str) -> None:
    """Root CA -> intermediate -> role; ACME on the intermediate (OpenBao docs:
    secrets/pki/acme: cluster path, response headers, config/acme)."""
    client.sys.enable_secrets_engine("pki", path=ROOT_MOUNT, config={"max_lease_ttl": "87600h"})
    client.write_data(f"{ROOT_MOUNT}/root/generate/internal",
                      data={"common_name": "certlocker test root", "key_type": "ec",
                            "key_bits": 256, "ttl": "87600h"})
    client.sys.enable_secrets_engine("pki", path=INT_MOUNT, config={
        "max_lease_ttl": "8760h",
        "passthrough_request_headers": ["If-Modified-Since"],
        "allowed_response_headers": ["Last-Modified", "Location", "Replay-Nonce", "Link"]})
    csr = client.write_data(f"{INT_MOUNT}/intermediate/generate/internal",
                            data={"common_name": "certlocker test intermediate",
                                  "key_type": "ec", "key_bits": 256})["data"]["csr"]
    signed = client.write_data(f"{ROOT_MOUNT}/root/sign-intermediate",
                               data={"csr": csr, "format": "pem", "ttl": "8760h"})
    root_pem = client.read(f"{ROOT_MOUNT}/cert/ca")["data"]["certificate"]
    # With the root in the bundle, sign answers ca_chain = [intermediate, root]: the
    # issuer must leave the root out of the chain it stores.
    client.write_data(f"{INT_MOUNT}/intermediate/set-signed",
                      data={"certificate": signed["data"]["certificate"] + "\n" + root_pem})
    client.write_data(f"{INT_MOUNT}/roles/{ROLE}", data={
        "allowed_domains": ["internal.test"], "allow_subdomains": True,
        "allow_bare_domains": False, "allow_localhost": False, "allow_ip_sans": False,
        "key_type": "any", "max_ttl": "72h", "ttl": "24h"})
    client.write_data(f"{INT_MOUNT}/config/cluster", data={
        "path": f"{vault_addr}/v1/{INT_MOUNT}", "aia_path": f"{vault_addr}/v1/{INT_MOUNT}"})
    client.write_data(f"{INT_MOUNT}/config/acme", data={
        "enabled": True, "default_directory_policy": f"role:{ROLE}",
        "allowed_roles": [ROLE], "dns_resolver": dns})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PkiStack]:
    ports = devstack.free_ports()
    if _port_80_free():
        ports["api"] = 80
    vault_addr = f"http://127.0.0.1:{ports['vault']}"
    stack = devstack.Stack(tmp_path_factory.mktemp("pki-stack"), ports,
                           pebble_env=SHARED_PEBBLE_ENV, extra_env={
                               "CERTLOCKER_ISSUERS__INTERNAL__TYPE": "vault-pki",
                               "CERTLOCKER_ISSUERS__INTERNAL__PKI_MOUNT": INT_MOUNT,
                               "CERTLOCKER_ISSUERS__INTERNAL__PKI_ROLE": ROLE,
                               "CERTLOCKER_ISSUERS__BAOACME__DIRECTORY_URL":
                                   f"{vault_addr}/v1/{INT_MOUNT}/acme/directory",
                               # certlocker's own ACME server orders from the PKI mount
                               "CERTLOCKER_ACME_SERVER_ISSUER": "internal",
                           })
    stack.up()
    try:
        assert stack.root_token is not None
        _setup_pki(hvac.Client(url=vault_addr, token=stack.root_token, timeout=10),
                   vault_addr, f"127.0.0.1:{ports['dns']}")
        yield PkiStack(stack)
    finally:
        stack.down()


def _verify_chain(leaf_pem: str, chain_pem: str, root: x509.Certificate) -> list[x509.Certificate]:
    """Each certificate is directly issued by the next, ending at ``root``."""
    certs = [x509.load_pem_x509_certificate(p.encode())
             for p in split_pem_chain(leaf_pem + chain_pem)]
    for child, parent in zip(certs, certs[1:] + [root], strict=True):
        child.verify_directly_issued_by(parent)
    return certs


def _san(cert: x509.Certificate) -> list[str]:
    return sorted(cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


def _assert_bundle(pki: PkiStack, cert_id: str, names: list[str], *,
                   root_in_chain: bool = False) -> None:
    bundle = pki.stored(cert_id)
    root = pki.root_ca()
    certs = _verify_chain(bundle["certificate"], bundle["chain"], root)
    if root_in_chain:  # the ACME issuer stores the CA's chain as served
        assert certs[-1] == root
        certs = certs[:-1]
    assert len(certs) == 2, "chain = the intermediate, without the root"
    assert _san(certs[0]) == sorted(names)
    key = serialization.load_pem_private_key(bundle["private_key"].encode(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == certs[0].public_key().public_bytes(der, spki)
    assert bundle["fullchain"] == bundle["certificate"] + bundle["chain"]


def test_vault_pki_issues_a_chain_that_verifies_to_the_pki_root(pki: PkiStack) -> None:
    names = ["api.internal.test", "www.internal.test"]
    status, body = pki.api("POST", "/v1/certificates?wait=60", {
        "environment": "dev", "service": "billing", "name": "web", "dns_names": names,
        "issuer": "internal"})
    assert status == 201, body
    assert body["status"] == "valid"
    _assert_bundle(pki, body["id"], names)
    issuer_dn = pki.root.read(f"{INT_MOUNT}/cert/ca")["data"]["certificate"]
    assert body["current"]["issuer"] == x509.load_pem_x509_certificate(
        issuer_dn.encode()).subject.rfc4514_string()


def test_vault_pki_refusal_fails_the_certificate_without_storing_anything(
        pki: PkiStack) -> None:
    status, body = pki.api("POST", "/v1/certificates?wait=60", {
        "environment": "dev", "service": "billing", "name": "outside",
        "dns_names": ["www.example.com"], "issuer": "internal"})
    assert status == 201, body  # declared; the issuance is over (and failed)
    assert body["status"] == "failed"
    assert f"{INT_MOUNT}/sign/{ROLE}" in body["last_error"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        pki.stored(body["id"])


def test_bootstrap_grants_the_sign_path_and_stays_idempotent(pki: PkiStack) -> None:
    rules = pki.root.sys.read_policy("certlocker")["data"]["rules"]
    assert f'path "{INT_MOUNT}/sign/{ROLE}"' in rules
    assert "@PKI_SIGN@" not in rules
    token = pki.stack.certlocker_token_file.read_text().strip()
    # Asked with the root token: certlocker's own token has no sys/capabilities-self
    # (that is in Vault's default policy, which it goes without).
    caps = pki.root.adapter.post(
        "/v1/sys/capabilities", json={"token": token, "paths": [f"{INT_MOUNT}/sign/{ROLE}",
                                                                f"{INT_MOUNT}/issue/{ROLE}"]})
    assert caps["data"][f"{INT_MOUNT}/sign/{ROLE}"] == ["update"]
    assert caps["data"][f"{INT_MOUNT}/issue/{ROLE}"] == ["deny"]
    settings = settings_mod.load(environ={**pki.stack.admin_env(),
                                          "CERTLOCKER_VAULT_TOKEN": pki.stack.root_token})
    boot = Bootstrapper(pki.root, settings, REPO / "policies")
    boot.policies()
    assert boot.report.changed == []


def test_acme_issuer_against_openbao_pki_acme_directory(pki: PkiStack) -> None:
    if pki.stack.ports["api"] != 80:
        pytest.skip("OpenBao's ACME validates http-01 on port 80 only (its resolver is "
                    "configurable, the port is not) and port 80 is taken here")
    names = ["acme.internal.test"]
    status, body = pki.api("POST", "/v1/certificates?wait=90", {
        "environment": "dev", "service": "billing", "name": "viaacme", "dns_names": names,
        "issuer": "baoacme"})
    assert status == 201, body
    assert body["status"] == "valid", body["last_error"]
    # OpenBao's ACME serves [leaf, intermediate, root] as the certificate chain.
    _assert_bundle(pki, body["id"], names, root_in_chain=True)


def test_openbao_acme_rejects_names_outside_the_role(pki: PkiStack) -> None:
    if pki.stack.ports["api"] != 80:
        pytest.skip("OpenBao's ACME needs the http-01 responder on port 80, which is taken")
    status, body = pki.api("POST", "/v1/certificates?wait=90", {
        "environment": "dev", "service": "billing", "name": "acmeoutside",
        "dns_names": ["www.example.org"], "issuer": "baoacme"})
    assert body["status"] == "failed", body
    assert body["current"] is None


def test_acme_server_clients_get_certificates_from_vault_pki(pki: PkiStack) -> None:
    """The ACME server with a Vault PKI upstream: a client's CSR is signed by the PKI
    mount's role, the chain verifies to the PKI root, and no key is stored."""
    names = ["shop.internal.test", "www.shop.internal.test"]
    grant_names(pki.root, "certlocker", "prod", "pki-shop", names)
    eab = acme_direct.binding(pki.stack.api_url, pki.stack.operator_token or "", "prod",
                              "pki-shop")
    acme = acme_direct.client(eab["directory_url"])
    acme_direct.register(acme, eab)
    got = acme_direct.obtain(acme, names)
    parts = split_pem_chain(got.fullchain)
    certs = _verify_chain(parts[0], "".join(parts[1:]), pki.root_ca())
    assert _san(certs[0]) == sorted(names)
    key = serialization.load_pem_private_key(got.key_pem, None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert key.public_key().public_bytes(der, spki) == certs[0].public_key().public_bytes(der, spki)
    stored = pki.stored("prod.pki-shop.acme-shop-internal-test")
    assert "private_key" not in stored
    assert stored["certificate"] == parts[0]
    status, view = pki.api("GET", "/v1/certificates/prod.pki-shop.acme-shop-internal-test")
    assert status == 200 and view["key_held_by"] == "client" and view["issuer"] == "internal"
