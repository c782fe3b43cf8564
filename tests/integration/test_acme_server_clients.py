"""Stock ACME clients (certbot, lego, Caddy, dehydrated, uacme; tests/support/
acme_clients.py) against certlocker's own ACME server, on the shared real stack.

Each client gets its own service (``web-<client>``) with its names granted, an EAB binding
from the API, and certlocker's plain-http directory on loopback; it runs with challenges
forbidden (certlocker's authorizations are valid at once) and no CA bundle. In order, per
client (the steps share the client; a step whose predecessor failed is skipped):

1. obtain: the client's files (names, its key is the certificate's), certlocker's record
   (valid, ``key_held_by: client``, the file's serial) and no private key anywhere under
   the mount;
2. renew: a new serial, which certlocker's record follows;
3. revoke (not Caddy, which has no revocation command): certlocker shows it revoked;
4. another service's name: refused (rejectedIdentifier, in the audit trail), never seen
   by the upstream CA, no certificate file;
5. once the service's credentials are revoked, the client's account is stopped: a
   renewal fails and certlocker records nothing new.

Every check is on files the client wrote, certlocker's API, Vault and Pebble's log, never
on what a client printed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support import acme_direct as ad
from tests.support import kv
from tests.support.acme_clients import (CLIENTS, Caddy, Client, ClientError, Issued,
                                        available)
from tests.support.audit_trail import stored_events
from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

ENV = "prod"
MOUNT = "certlocker"
#: how long Caddy gets for what must fail (it retries instead of exiting)
CADDY_REFUSAL_WAIT = 20.0


@dataclasses.dataclass
class Run:
    """One client's way through the steps."""

    name: str
    service: str
    domains: list[str]
    eab: dict[str, Any]
    client: Client
    workdir: Path
    issued: Issued | None = None
    serial: int | None = None
    done: set[str] = dataclasses.field(default_factory=set)

    @property
    def cert_id(self) -> str:
        return f"{ENV}.{self.service}.acme-{self.domains[0].replace('.', '-')}"

    @property
    def secret_path(self) -> str:
        return f"certs/{ENV}/{self.service}/acme-{self.domains[0].replace('.', '-')}"

    def needs(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"{self.name}: step {', '.join(missing)} did not pass")


def directory_url(stack: CertlockerStack) -> str:
    return f"{stack.api_url}/acme/{ENV}/directory"


def view(stack: CertlockerStack, cert_id: str) -> dict[str, Any]:
    resp = requests.get(f"{stack.api_url}/v1/certificates/{cert_id}",
                        headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def hexserial(serial: int) -> str:
    return format(serial, "x")


def spki(key_or_cert: Any) -> bytes:
    return bytes(key_or_cert.public_key().public_bytes(Encoding.DER,
                                                      PublicFormat.SubjectPublicKeyInfo))


def new_runner(name: str, workdir: Path, stack: CertlockerStack,
               eab: dict[str, Any]) -> Client:
    assert eab["directory_url"] == directory_url(stack)
    client: Client = CLIENTS[name](workdir, eab["directory_url"], eab["eab_kid"],
                                   eab["eab_hmac_key"], None, allow_challenges=False)
    return client


@pytest.fixture(scope="module")
def stack(certlocker_stack: CertlockerStack) -> CertlockerStack:
    return certlocker_stack


@pytest.fixture(scope="module", params=list(CLIENTS))
def run(request: pytest.FixtureRequest, stack: CertlockerStack,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One client, its service, names and binding; every step of the module uses it in
    turn (module scope: pytest runs all steps of one client before the next client)."""
    name = str(request.param)
    if not available(name):
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    service = f"web-{name}"
    # Caddy manages names one by one (one order, one certificate per name): one name.
    domains = [f"www.{name}.acme.test"] + ([] if name == "caddy" else [f"{name}.acme.test"])
    kv.grant_names(stack.client(stack.root_token), MOUNT, ENV, service, domains)
    eab = ad.binding(stack.api_url, stack.operator_token, ENV, service)
    workdir = tmp_path_factory.mktemp(f"acme-{name}")
    client = new_runner(name, workdir / "client", stack, eab)
    try:
        yield Run(name, service, domains, eab, client, workdir)
    finally:
        client.close()


def check_files(run: Run, issued: Issued) -> x509.Certificate:
    """What the client wrote: a certificate for its names, certifying the key it kept,
    with the issuer's chain."""
    cert = issued.certificate()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(run.domains)
    assert spki(issued.private_key()) == spki(cert)
    chain = issued.chain()
    assert chain[0] == cert and len(chain) >= 2 and chain[1].subject == cert.issuer
    return cert


def check_recorded(stack: CertlockerStack, run: Run, issued: Issued,
                   cert: x509.Certificate) -> None:
    """certlocker's record of it: valid, the client holds the key, this serial; and the
    client's key is nowhere under the mount."""
    shown = view(stack, run.cert_id)
    assert shown["status"] == "valid", shown
    assert shown["key_held_by"] == "client"
    assert shown["current"]["serial"] == hexserial(cert.serial_number)
    secrets = kv.every_secret(stack.client(stack.root_token), MOUNT)
    assert kv.holding_key(secrets, issued.key_path.read_bytes()) == []
    stored = secrets[run.secret_path]
    assert "private_key" not in stored
    assert x509.load_pem_x509_certificates(stored["certificate"].encode())[0] == cert


def test_1_obtains_a_certificate_for_its_service(stack: CertlockerStack, run: Run) -> None:
    issued = run.client.obtain(run.domains)
    cert = check_files(run, issued)
    check_recorded(stack, run, issued, cert)
    run.issued, run.serial = issued, cert.serial_number
    run.done.add("obtain")


def test_2_renews_it(stack: CertlockerStack, run: Run) -> None:
    run.needs("obtain")
    issued = run.client.renew()
    cert = check_files(run, issued)
    assert cert.serial_number != run.serial
    check_recorded(stack, run, issued, cert)
    run.issued, run.serial = issued, cert.serial_number
    run.done.add("renew")


def test_3_revokes_it(stack: CertlockerStack, run: Run) -> None:
    if not run.client.supports_revoke:
        pytest.skip(f"{run.name} has no revocation command or API (Caddy 2.6): "
                    "revoke through certlocker instead")
    run.needs("renew")
    assert run.issued is not None and run.serial is not None
    run.client.revoke(run.issued)
    shown = view(stack, run.cert_id)
    assert shown["status"] == "revoked", shown
    assert shown["revocation"]["serial"] == hexserial(run.serial)
    run.done.add("revoke")


def test_4_another_services_name_is_refused(stack: CertlockerStack, run: Run,
                                            tmp_path: Path) -> None:
    """A fresh account of the service (same binding) asks for a name granted to another
    service: the order is refused before the CA, and the client writes nothing."""
    other = f"only-{run.name}.other.acme.test"
    kv.grant_names(stack.client(stack.root_token), MOUNT, ENV, f"other-{run.name}", [other])
    refused_id = f"{ENV}.{run.service}.acme-{other.replace('.', '-')}"
    client = new_runner(run.name, tmp_path / "refused", stack, run.eab)
    try:
        if isinstance(client, Caddy):
            client.timeout = CADDY_REFUSAL_WAIT
        with pytest.raises(ClientError):
            client.obtain([other])
    finally:
        client.close()
    denied = [e for e in stored_events(stack.client(stack.root_token), MOUNT)
              if e["action"] == "acme.order.create" and e["subject"] == refused_id]
    assert denied and all(e["outcome"] == "denied" for e in denied), denied
    assert other not in (stack.state_dir / "pebble.log").read_text()
    written = [p for p in (tmp_path / "refused").rglob("*")
               if other in p.name and p.suffix in (".pem", ".crt", ".cer")]
    assert not written, written
    resp = requests.get(f"{stack.api_url}/v1/certificates/{refused_id}",
                        headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert resp.status_code == 404, resp.text


def test_5_revoked_credentials_stop_the_client(stack: CertlockerStack, run: Run) -> None:
    run.needs("obtain")
    assert run.issued is not None and run.serial is not None
    before = view(stack, run.cert_id)
    kept = leaf_serials(run.workdir)
    finalized = len(_finalizations(stack, run))
    resp = requests.delete(f"{stack.api_url}/v1/services/{ENV}/{run.service}/credentials",
                           headers={"X-Vault-Token": stack.operator_token}, timeout=30)
    assert resp.status_code == 200, resp.text
    if isinstance(run.client, Caddy):
        run.client.timeout = CADDY_REFUSAL_WAIT
    started = time.monotonic()
    with pytest.raises(ClientError):
        run.client.renew()
    # Nothing new: no certificate the client did not have before (dehydrated and uacme
    # renamed the revoked one), certlocker's record is unchanged and no order of the
    # service was finalized.
    assert run.serial in kept
    assert leaf_serials(run.workdir) == kept
    after = view(stack, run.cert_id)
    assert (after["status"], after["current"]) == (before["status"], before["current"])
    assert len(_finalizations(stack, run)) == finalized, time.monotonic() - started


def leaf_serials(workdir: Path) -> set[int]:
    """The serials of the first certificate of every PEM file under ``workdir``."""
    found = set()
    for path in workdir.rglob("*"):
        if not path.is_file() or path.stat().st_size > 100_000:
            continue
        data = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            found.add(x509.load_pem_x509_certificates(
                data[data.index(b"-----BEGIN CERTIFICATE-----"):])[0].serial_number)
    return found


def _finalizations(stack: CertlockerStack, run: Run) -> list[dict[str, Any]]:
    return [e for e in stored_events(stack.client(stack.root_token), MOUNT)
            if e["action"] == "acme.order.finalize"
            and str(e["subject"]).startswith(f"{ENV}.{run.service}.")]
