"""ACME against real Pebble: external account binding, badNonce storms, crash resume."""

from __future__ import annotations

import base64
import secrets
from typing import Iterator

import pytest

from certlocker.errors import IssuanceFailed
from certlocker.issuance import keys
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.issuance.base import Inflight, IssueRequest
from certlocker.lifecycle.records.issuer_secrets import StoreIssuerSecrets
from certlocker.lifecycle.service import CertificateService
from certlocker.lifecycle.records.vault_adapters import StoreJournal
from certlocker.models import CertificateRef, CertificateSpec, KeyType, State
from certlocker.settings import IssuerSettings
from devstack import free_port, wait_until
from tests.support.acme_helpers import (CountingTransport, Http01Responder, MemoryAccounts,
                                        MemoryJournal, http01_responder, root_store)
from tests.support.memory_store import grant
from tests.support.stack import Pebble, running_pebble
from tests.support.pools import certificate_pools

pytestmark = pytest.mark.integration

EAB_KID = "certlocker-test-kid"
EAB_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def responder() -> Iterator[Http01Responder]:
    with http01_responder(free_port()) as answers:
        yield answers


@pytest.fixture(scope="module")
def nonce_pebble(tmp_path_factory: pytest.TempPathFactory,
                 responder: Http01Responder) -> Iterator[Pebble]:
    """Pebble rejecting half of all valid nonces, validating http-01 at ``responder``."""
    with running_pebble(tmp_path_factory.mktemp("pebble-nonce"), http01_port=responder.port,
                        env={"PEBBLE_WFE_NONCEREJECT": "50"}) as server:
        yield server


@pytest.fixture(scope="module")
def eab_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with running_pebble(tmp_path_factory.mktemp("pebble-eab"), eab_keys={EAB_KID: EAB_KEY},
                        env={"PEBBLE_WFE_NONCEREJECT": "0"}) as server:
        yield server


def settings_for(pebble: Pebble, name: str = "pebble", **extra: object) -> IssuerSettings:
    return IssuerSettings(name=name, directory_url=pebble.directory_url,
                          ca_bundle=str(pebble.ca_bundle), **extra)  # type: ignore[arg-type]


# -- External Account Binding -----------------------------------------------------------------
def test_account_creation_needs_eab_from_vault(eab_pebble: Pebble, openbao) -> None:  # type: ignore[no-untyped-def]
    store = root_store(openbao)
    name = "eab-" + secrets.token_hex(3)
    conf = settings_for(eab_pebble, name, eab=True)
    without = AcmeIssuer(conf, MemoryAccounts(), Http01Responder(),
                         secrets=StoreIssuerSecrets(store, name))
    with pytest.raises(IssuanceFailed) as caught:
        without.client()
    assert caught.value.acme_code == "externalAccountRequired"

    # the issuer does not send EAB at all when not configured to: Pebble refuses
    plain = AcmeIssuer(settings_for(eab_pebble, name), MemoryAccounts(), Http01Responder(),
                       secrets=StoreIssuerSecrets(store, name))
    with pytest.raises(IssuanceFailed) as refused:
        plain.client()
    assert refused.value.acme_code == "externalAccountRequired"

    store.write(store.paths.acme_eab(name), {"kid": EAB_KID, "hmac_key": EAB_KEY}, cas=None)
    accounts = MemoryAccounts()
    bound = AcmeIssuer(conf, accounts, Http01Responder(),
                       secrets=StoreIssuerSecrets(store, name))
    assert bound.client().net.account is not None
    assert accounts.doc is not None and accounts.doc["uri"].startswith("https://127.0.0.1")
    assert EAB_KEY not in str(accounts.doc)


def test_a_wrong_eab_key_is_refused_by_the_ca(eab_pebble: Pebble, openbao) -> None:  # type: ignore[no-untyped-def]
    store = root_store(openbao)
    name = "eab-" + secrets.token_hex(3)
    wrong = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    store.write(store.paths.acme_eab(name), {"kid": EAB_KID, "hmac_key": wrong}, cas=None)
    issuer = AcmeIssuer(settings_for(eab_pebble, name, eab=True), MemoryAccounts(),
                        Http01Responder(), secrets=StoreIssuerSecrets(store, name))
    with pytest.raises(IssuanceFailed) as caught:
        issuer.client()
    assert wrong not in caught.value.detail


# -- badNonce ---------------------------------------------------------------------------------
def test_every_certificate_is_issued_while_pebble_rejects_half_the_nonces(
        nonce_pebble: Pebble, responder: Http01Responder) -> None:
    transport = CountingTransport()
    issuer = AcmeIssuer(settings_for(nonce_pebble), MemoryAccounts(), responder, timeout=120,
                        transport=transport)
    serials = set()
    for i in range(10):
        issued = issuer.issue(IssueRequest(CertificateRef("dev", "nonce", f"c{i}"),
                                           (f"n{i}.nonce.test",), KeyType.EC_P256),
                              MemoryJournal())
        serials.add(issued.info.serial)
    assert len(serials) == 10
    assert transport.bad_nonces > 0  # Pebble did reject nonces: the retries were exercised


# -- crash between finalize and storing --------------------------------------------------------
@pytest.mark.parametrize("crash_at", ["ready", "valid"],
                         ids=["after validation, before finalize", "after finalize"])
def test_a_crash_resumes_the_same_order_with_the_same_key(
        nonce_pebble: Pebble, responder: Http01Responder, openbao, crash_at: str) -> None:  # type: ignore[no-untyped-def]
    store = root_store(openbao)
    ref = CertificateRef("dev", "crash", f"at-{crash_at}")
    names = (f"{crash_at}.crash.test",)
    spec = CertificateSpec(ref, names, "pebble", KeyType.EC_P256)
    store.create_spec(spec)
    grant(store, spec)
    transport = CountingTransport()
    issuer = AcmeIssuer(settings_for(nonce_pebble), MemoryAccounts(), responder, timeout=120,
                        transport=transport)

    # what the crashed process had done: key and order in the journal, order driven on
    key = keys.generate(KeyType.EC_P256)
    acme = issuer.client()
    orderr = acme.new_order(keys.csr_pem(key, names))
    StoreJournal(store, ref).save(Inflight(private_key=keys.to_pem(key), order_url=orderr.uri,
                                           dns_names=tuple(names), issuer="pebble",
                                           key_type="ec-p256"))
    for authzr in orderr.authorizations:
        challb = next(c for c in authzr.body.challenges if c.chall.typ == "http-01")
        response, validation = challb.response_and_validation(acme.net.key)
        responder.put(challb.chall.encode("token"), validation)
        acme.answer_challenge(challb, response)
    def order_status() -> str:
        return acme.net.post(orderr.uri, None,
                             new_nonce_url=acme.directory["newNonce"]).json()["status"]

    wait_until(lambda: order_status() == "ready", 60, what="the order to be ready")
    if crash_at == "valid":
        acme.begin_finalization(orderr)
        wait_until(lambda: order_status() == "valid", 60, what="the order to be valid")

    new_order_url = acme.directory["newOrder"]
    orders_before = transport.count("POST", new_order_url)
    service = CertificateService(store, {"pebble": issuer}, pools=certificate_pools(1))
    try:
        status = service.issue(ref)
    finally:
        service.shutdown()

    assert status.state is State.VALID, status.last_error
    assert transport.count("POST", new_order_url) == orders_before  # no new order
    stored = store.read(store.paths.cert(ref))
    assert stored is not None
    assert keys.public_key_matches(key, stored.data["certificate"])
    order = acme.net.post(orderr.uri, None, new_nonce_url=acme.directory["newNonce"]).json()
    assert order["status"] == "valid"
    from_order = acme.net.post(order["certificate"], None,
                               new_nonce_url=acme.directory["newNonce"]).text
    assert from_order.startswith(stored.data["certificate"].strip())
    assert StoreJournal(store, ref).load() is None  # cleared once stored


# -- preferred chain ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alternate_pebble(tmp_path_factory: pytest.TempPathFactory,
                     responder: Http01Responder) -> Iterator[Pebble]:
    """Pebble offering one alternate chain to a second root."""
    with running_pebble(tmp_path_factory.mktemp("pebble-alt"), http01_port=responder.port,
                        env={"PEBBLE_WFE_NONCEREJECT": "0",
                             "PEBBLE_ALTERNATE_ROOTS": "1"}) as server:
        yield server


def _root_cn(pem: str) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem.encode())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize("root_index", [0, 1], ids=["default chain", "alternate chain"])
def test_the_preferred_chain_is_the_one_stored(alternate_pebble: Pebble,
                                               responder: Http01Responder,
                                               root_index: int) -> None:
    from cryptography import x509

    from certlocker.x509info import split_pem_chain

    wanted = _root_cn(alternate_pebble.roots(root_index))
    issuer = AcmeIssuer(settings_for(alternate_pebble, preferred_chain=wanted),
                        MemoryAccounts(), responder, timeout=60)
    issued = issuer.issue(IssueRequest(CertificateRef("dev", "chain", f"c{root_index}"),
                                       (f"c{root_index}.chain.test",), KeyType.EC_P256),
                          MemoryJournal())
    top = x509.load_pem_x509_certificate(split_pem_chain(issued.chain)[-1].encode())
    assert wanted in top.issuer.rfc4514_string()
