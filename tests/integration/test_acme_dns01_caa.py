"""dns-01 through RFC 2136 + TSIG against a real BIND 9, and CAA checked against it.

Pebble resolves ``_acme-challenge`` names through this BIND (its ``-dnsserver``); the
TSIG secret is read from a real OpenBao, never from settings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

import devstack
from certlocker.errors import IssuanceFailed
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.issuance.base import IssueRequest
from certlocker.issuance.caa import DnsCaaLookup
from certlocker.issuance.dns.rfc2136 import Rfc2136Options, Rfc2136Provider
from certlocker.lifecycle.records.issuer_secrets import StoreIssuerSecrets
from certlocker.models import CertificateRef, KeyType
from certlocker.settings import IssuerSettings
from tests.support.acme_helpers import MemoryAccounts, MemoryJournal, root_store
from tests.support.bind import Bind, running_bind
from tests.support.memory_store import grant
from tests.support.stack import Pebble
from tests.support.pools import certificate_pools, threads

pytestmark = pytest.mark.integration

CAA_RECORDS = [
    'deny IN CAA 0 issue "other-ca.test"',
    'allow IN CAA 0 issue "pebble.test"',
    'wild IN CAA 0 issue "pebble.test"',
    'wild IN CAA 0 issuewild ";"',
]
ISSUER = "bind"


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bind]:
    with running_bind(tmp_path_factory.mktemp("bind"), CAA_RECORDS) as server:
        yield server


@pytest.fixture(scope="module")
def dns_pebble(tmp_path_factory: pytest.TempPathFactory, bind: Bind) -> Iterator[Pebble]:
    """A Pebble that resolves names through the BIND server (no challtestsrv)."""
    state = tmp_path_factory.mktemp("pebble-dns")
    port, mgmt, tls, http01 = (devstack.free_port() for _ in range(4))
    proc, ca_bundle = devstack.start_pebble(state, port, mgmt, http01, bind.port, tls_port=tls,
                                            env={"PEBBLE_WFE_NONCEREJECT": "0"})
    try:
        yield Pebble(directory_url=f"https://127.0.0.1:{port}/dir", ca_bundle=ca_bundle,
                     mgmt_url=f"https://127.0.0.1:{mgmt}", mgmt_port=mgmt, http01_port=http01,
                     tls_port=tls, dns_port=bind.port, challtestsrv_url="", procs=(proc,),
                     state_dir=Path(state))
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def store(openbao, bind: Bind):  # type: ignore[no-untyped-def]
    store = root_store(openbao)
    store.write(store.paths.dns_credentials(ISSUER), {"secret": bind.secret}, cas=None)
    return store


def make_issuer(dns_pebble: Pebble, bind: Bind, store, **extra) -> AcmeIssuer:  # type: ignore[no-untyped-def]
    conf = IssuerSettings(name=ISSUER, directory_url=dns_pebble.directory_url,
                          ca_bundle=str(dns_pebble.ca_bundle), challenge="dns-01",
                          dns=bind.dns_options(), caa_resolver=bind.address, **extra)
    return AcmeIssuer(conf, MemoryAccounts(), _NoHttp01(), timeout=60,
                      secrets=StoreIssuerSecrets(store, ISSUER))


class _NoHttp01:
    def put(self, token: str, key_authorization: str) -> None:
        raise AssertionError("a dns-01 issuer must not publish http-01 answers")

    def delete(self, token: str) -> None:
        raise AssertionError("a dns-01 issuer must not publish http-01 answers")


def provider(bind: Bind, secret: str) -> Rfc2136Provider:
    return Rfc2136Provider(Rfc2136Options.from_settings("bind", bind.dns_options()),
                           lambda: {"secret": secret})


def request(*names: str, key_type: KeyType = KeyType.EC_P256) -> IssueRequest:
    return IssueRequest(CertificateRef("dev", "web", "dns"), names, key_type)


def sans(pem: str) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return set(cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))


# -- RFC 2136 against BIND ----------------------------------------------------------------
def test_rfc2136_adds_and_removes_exactly_one_txt_value(bind: Bind) -> None:
    dns = provider(bind, bind.secret)
    fqdn = "_acme-challenge.rr.example.test"
    dns.present(fqdn, "first")
    dns.present(fqdn, "second")
    dns.wait_propagated(fqdn, "second", time.monotonic() + 10)
    assert sorted(dns.served(fqdn)) == ["first", "second"]
    dns.cleanup(fqdn, "first")
    assert dns.served(fqdn) == ["second"]
    dns.cleanup(fqdn, "second")
    assert dns.served(fqdn) == []


def test_rfc2136_with_a_wrong_tsig_secret_is_refused_and_changes_nothing(bind: Bind) -> None:
    wrong = provider(bind, "c2VjcmV0LXRoYXQtYmluZC1kb2VzLW5vdC1rbm93LWF0LWFsbA==")
    with pytest.raises(IssuanceFailed) as caught:
        wrong.present("_acme-challenge.wrong.example.test", "x")
    assert caught.value.acme_code == "dns" and not caught.value.retryable
    assert "c2VjcmV0" not in caught.value.detail
    assert provider(bind, bind.secret).served("_acme-challenge.wrong.example.test") == []


# -- dns-01 issuance with Pebble ----------------------------------------------------------
def test_dns01_issues_a_wildcard_with_its_base_name(dns_pebble: Pebble, bind: Bind,
                                                   store) -> None:  # type: ignore[no-untyped-def]
    issuer = make_issuer(dns_pebble, bind, store)
    issued = issuer.issue(request("example.test", "*.example.test"), MemoryJournal())
    assert sans(issued.certificate) == {"example.test", "*.example.test"}
    # every TXT value it published is gone again
    assert provider(bind, bind.secret).served("_acme-challenge.example.test") == []


def test_dns01_without_the_tsig_secret_in_vault_fails_clearly(dns_pebble: Pebble, bind: Bind,
                                                             openbao) -> None:  # type: ignore[no-untyped-def]
    empty = root_store(openbao)
    conf = IssuerSettings(name="nosecret", directory_url=dns_pebble.directory_url,
                          ca_bundle=str(dns_pebble.ca_bundle), challenge="dns-01",
                          dns=bind.dns_options())
    issuer = AcmeIssuer(conf, MemoryAccounts(), _NoHttp01(), timeout=30,
                        secrets=StoreIssuerSecrets(empty, "nosecret"))
    with pytest.raises(IssuanceFailed) as caught:
        issuer.issue(request("nosecret.example.test"), MemoryJournal())
    assert "system/dns/nosecret" in caught.value.detail


# -- CAA ------------------------------------------------------------------------------------
def test_caa_lookup_reads_bind_records(bind: Bind) -> None:
    lookup = DnsCaaLookup(bind.address)
    assert [str(r) for r in lookup("deny.example.test")] == ['0 issue "other-ca.test"']
    assert lookup("nothing.example.test") == []
    assert lookup("test") == []


@pytest.mark.parametrize("names,refused", [
    (("www.deny.example.test",), "www.deny.example.test"),
    (("ok.wild.example.test", "*.wild.example.test"), "*.wild.example.test"),
], ids=["another CA named in a parent's issue", "issuewild forbids every CA"])
def test_caa_refuses_before_ordering(dns_pebble: Pebble, bind: Bind, store, names,
                                     refused) -> None:  # type: ignore[no-untyped-def]
    issuer = make_issuer(dns_pebble, bind, store, caa_identities=("pebble.test",))
    with pytest.raises(IssuanceFailed) as caught:
        issuer.issue(request(*names), MemoryJournal())
    assert caught.value.acme_code == "caa" and caught.value.retryable is False
    assert caught.value.detail.startswith(refused + ":")


@pytest.mark.parametrize("names", [
    ("www.allow.example.test",), ("www.wild.example.test",), ("free.example.test",),
], ids=["our CA named", "issue names us, no wildcard asked", "no CAA anywhere"])
def test_caa_permits_and_the_certificate_is_issued(dns_pebble: Pebble, bind: Bind, store,
                                                   names) -> None:  # type: ignore[no-untyped-def]
    issuer = make_issuer(dns_pebble, bind, store, caa_identities=("pebble.test",))
    issued = issuer.issue(request(*names), MemoryJournal())
    assert sans(issued.certificate) == set(names)


def test_a_caa_refusal_is_not_retried_by_the_reconciler(dns_pebble: Pebble, bind: Bind,
                                                        store) -> None:  # type: ignore[no-untyped-def]
    """Against the real BIND, Pebble and OpenBao: a certificate whose name CAA forbids
    fails once, its status says it is not retried, and a month of reconciler passes
    makes no second attempt and sends one ``issuance-refused`` alert, never
    ``retries-exhausted``."""
    import datetime as dt

    from certlocker.clock import FixedClock
    from certlocker.lifecycle.policy import alerts
    from certlocker.lifecycle.records.due_index import DueIndex
    from certlocker.lifecycle.reconciler import Options, Reconciler
    from certlocker.lifecycle.service import CertificateService
    from certlocker.models import CertificateSpec, State

    clock = FixedClock(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    policy = alerts.AlertPolicy(max_attempts=2)
    due = DueIndex(store, policy, clock)
    service = CertificateService(store, {ISSUER: make_issuer(
        dns_pebble, bind, store, caa_identities=("pebble.test",))}, clock=clock,
        pools=certificate_pools(1), due_index=due)
    sent: list[alerts.Alert] = []

    class Sink:
        def send(self, alert: alerts.Alert) -> None:
            sent.append(alert)

    reconciler = Reconciler(store, service, due, notifier=Sink(), clock=clock,
                            pool=threads(1, "reconcile"),
                            options=Options(workers=1), policy=policy)
    ref = CertificateRef("dev", "caa", "refused")
    spec = CertificateSpec(ref, ("www.deny.example.test",), ISSUER)
    store.create_spec(spec)
    grant(store, spec)
    try:
        reconciler.handle(ref)
        status, _ = store.read_status(ref)
        assert (status.state, status.attempts, status.retryable) == (State.FAILED, 1, False)
        assert status.next_attempt_at is None
        assert status.last_error.startswith("www.deny.example.test:")
        for _ in range(6):
            clock.advance(dt.timedelta(days=5))
            reconciler.handle(ref)
        status, _ = store.read_status(ref)
        assert status.attempts == 1
        assert [a.kind for a in sent] == [alerts.ISSUANCE_REFUSED]
    finally:
        reconciler.close()
        service.shutdown()
        store.destroy(store.paths.spec(ref))
        store.destroy(store.paths.status(ref))
