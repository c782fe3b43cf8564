"""The stock ACME client runners (tests/support/acme_clients.py), proved against Pebble.

Pebble here requires external account binding and accepts every challenge
(``PEBBLE_VA_ALWAYS_VALID=1``), and reuses an account's valid authorizations
(``PEBBLE_AUTHZREUSE=100``). So the first order of each client meets pending
authorizations (the client answers them), and the forced renewal meets the same
authorizations already ``valid``: it runs with challenges forbidden, which proves the
client skips valid authorizations, as it must against certlocker.

Every check is on what the client wrote (certificate, key) or what Pebble says about a
serial, never on what the client printed.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.acme_clients import (CLIENTS, Client, ClientError, Issued,
                                        RevokeUnsupported, available)
from tests.support.stack import Pebble, running_pebble

pytestmark = pytest.mark.integration

EAB_KID = "clients-" + secrets.token_hex(4)
# A first byte of 0xF8 makes the base64url key start with "-": one key in 64 does, and a
# runner that passes it as "--flag KEY" breaks there (certbot: "expected one argument").
EAB_KEY = base64.urlsafe_b64encode(b"\xf8" + secrets.token_bytes(31)).rstrip(b"=").decode()
assert EAB_KEY.startswith("-")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with running_pebble(tmp_path_factory.mktemp("pebble-clients"),
                        eab_keys={EAB_KID: EAB_KEY},
                        env={"PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_AUTHZREUSE": "100",
                             "PEBBLE_WFE_NONCEREJECT": "0"}) as server:
        yield server


def pebble_status(pebble: Pebble, serial: int) -> str:
    """Pebble's own word on a serial: "Valid" or "Revoked"."""
    context = ssl.create_default_context(cafile=str(pebble.ca_bundle))
    url = f"{pebble.mgmt_url}/cert-status-by-serial/{serial:x}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    with opener.open(url, timeout=10) as response:
        return str(json.load(response)["Status"])


def spki(key_or_cert: object) -> bytes:
    public = key_or_cert.public_key()  # type: ignore[attr-defined]
    return bytes(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def check_issued(issued: Issued, domains: list[str], pebble: Pebble) -> x509.Certificate:
    cert = issued.certificate()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == sorted(domains)
    # the key the client generated and kept is the key the certificate certifies
    assert spki(issued.private_key()) == spki(cert)
    chain = issued.chain()
    assert chain[0] == cert and len(chain) >= 2, "the chain starts with the leaf"
    assert chain[1].subject == cert.issuer
    assert pebble_status(pebble, cert.serial_number) == "Valid"
    return cert


@pytest.mark.parametrize("name", list(CLIENTS))
def test_client_obtains_renews_and_revokes(name: str, pebble: Pebble, tmp_path: Path) -> None:
    if not available(name):
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    domains = [f"{name}.example.test"]
    client: Client = CLIENTS[name](tmp_path / name, pebble.directory_url, EAB_KID, EAB_KEY,
                                   pebble.ca_bundle)
    try:
        first = check_issued(client.obtain(domains), domains, pebble)
        hook_calls = client.challenge_calls()
        if name in ("dehydrated", "uacme"):  # the clients whose hook sees challenges
            assert len(hook_calls) == 1, hook_calls

        # Pebble now hands this account the same, valid, authorization: a client that
        # tried to answer a challenge would fail here.
        client.allow_challenges = False
        renewed_issued = client.renew()
        renewed = check_issued(renewed_issued, domains, pebble)
        assert client.challenge_calls() == hook_calls
        assert renewed.serial_number != first.serial_number
        if client.renewal_new_key:
            assert spki(renewed) != spki(first), "a renewal generates a new key"
        else:
            assert spki(renewed) == spki(first)

        if not client.supports_revoke:
            with pytest.raises(RevokeUnsupported):
                client.revoke(renewed_issued)
            return
        client.revoke(renewed_issued)
        assert pebble_status(pebble, renewed.serial_number) == "Revoked"
        assert pebble_status(pebble, first.serial_number) == "Valid"
    finally:
        client.close()


def test_clients_refuse_a_directory_off_loopback(tmp_path: Path) -> None:
    for name, runner in CLIENTS.items():
        with pytest.raises(ValueError, match="loopback only"):
            runner(tmp_path / name, "https://acme-v02.api.letsencrypt.org/directory",
                   EAB_KID, EAB_KEY, None)


@pytest.mark.parametrize("name", [n for n in CLIENTS if n != "caddy"])
def test_forbidden_challenges_fail_the_client(name: str, pebble: Pebble,
                                              tmp_path: Path) -> None:
    """The other half of the skip proof: a new account meets *pending* authorizations,
    and with challenges forbidden the client fails instead of answering them. (Caddy is
    left out: with no challenge type enabled it retries with backoff rather than exit.)"""
    if not available(name):
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    client: Client = CLIENTS[name](tmp_path / name, pebble.directory_url, EAB_KID, EAB_KEY,
                                   pebble.ca_bundle, allow_challenges=False)
    try:
        with pytest.raises(ClientError):
            client.obtain([f"forbidden-{name}.example.test"])
    finally:
        client.close()
