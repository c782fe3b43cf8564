"""ACME Renewal Information (RFC 9773): the certificate id, the issuer's window fetch,
``replaces`` on renewal orders, and the CA's window in the renewal decision.

Against the in-memory CA of tests/support/fake_acme.py. No Pebble test: Debian's
Pebble 2.4 serves no ``renewalInfo``, nor does OpenBao 2.7.2's PKI ACME (the string is
not in either binary).
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certlocker.clock import FixedClock
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.issuance.ari import ari_id, cert_id
from certlocker.issuance.base import IssueRequest, RenewalWindow
from certlocker.lifecycle.policy import planning, reissue
from certlocker.lifecycle import renewal_info
from certlocker.lifecycle.records.due_index import DueIndex
from certlocker.lifecycle.reconciler import ISSUED, UP_TO_DATE, Reconciler
from certlocker.lifecycle.service import CertificateService
from certlocker.models import (AriWindow, CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, KeyType, State)
from certlocker.settings import IssuerSettings
from tests.support.fake_acme import FakeAcme, ari_id_of
from tests.support.memory_store import MemoryStore, grant
from tests.support.pools import certificate_pools, threads
from tests.unit.test_acme_requests import Accounts, Challenges, Journal

REF = CertificateRef("dev", "web", "www")
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def _cert(serial: int, key_identifier: bytes | None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(T0).not_valid_after(T0 + DAY))
    if key_identifier is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(
            key_identifier, None, None), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


# -- the certificate identifier (RFC 9773 section 4.1) ---------------------------------

RFC_AKI = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")


def test_ari_id_matches_the_rfc_example() -> None:
    assert ari_id(RFC_AKI, 0x87654321) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize("serial, encoded", [
    (0x7F, "fw"), (0x80, "AIA"), (0x0100, "AQA"), (1, "AQ")])
def test_the_serial_is_the_der_integer_content(serial: int, encoded: str) -> None:
    assert ari_id(b"\x01", serial) == f"AQ.{encoded}"


def test_cert_id_reads_the_aki_and_serial_of_a_certificate() -> None:
    assert cert_id(_cert(0x87654321, RFC_AKI)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_cert_id_is_none_without_an_authority_key_identifier() -> None:
    assert cert_id(_cert(5, None)) is None
    assert cert_id("not a certificate") is None


# -- the issuer -------------------------------------------------------------------------

def _issuer(ca: FakeAcme, store: Challenges) -> AcmeIssuer:
    conf = IssuerSettings(name="fake", directory_url=ca.directory_url)
    return AcmeIssuer(conf, Accounts(), store, transport=ca, sleep=lambda s: None,
                      caa_lookup=lambda name: [])


def _request(replaces: str | None = None) -> IssueRequest:
    return IssueRequest(REF, ("www.example.test",), KeyType.EC_P256, replaces=replaces)


def test_renewal_info_parses_the_window_explanation_and_retry_after() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, ari=True)
    acme = _issuer(ca, store)
    issued = acme.issue(_request(), Journal())
    start, end = T0, T0 + DAY
    ca.windows[ari_id_of(x509.load_pem_x509_certificate(issued.certificate.encode()))] = (
        start, end)
    ca.ari_explanation, ca.ari_retry_after = "https://ca.test/incident", "3600"
    assert acme.renewal_info(issued.certificate) == RenewalWindow(
        start, end, "https://ca.test/incident", dt.timedelta(hours=1))


@pytest.mark.parametrize("retry_after", ["9" * 30, "9" * 5000])
def test_a_retry_after_too_long_for_a_timedelta_is_taken_as_a_year(retry_after: str) -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, ari=True)
    acme = _issuer(ca, store)
    issued = acme.issue(_request(), Journal())
    ca.windows[ari_id_of(x509.load_pem_x509_certificate(issued.certificate.encode()))] = (
        T0, T0 + DAY)
    ca.ari_retry_after = retry_after
    window = acme.renewal_info(issued.certificate)
    assert window is not None and window.retry_after == dt.timedelta(days=365)


def test_renewal_info_is_none_without_renewal_info_in_the_directory() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store)
    acme = _issuer(ca, store)
    issued = acme.issue(_request(), Journal())
    assert acme.renewal_info(issued.certificate) is None


def test_renewal_info_is_none_and_logged_when_the_ca_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, ari=True)
    acme = _issuer(ca, store)
    issued = acme.issue(_request(), Journal())
    ca.ari_fail = True
    with caplog.at_level(logging.WARNING):
        assert acme.renewal_info(issued.certificate) is None
    assert "acme.renewal_info.failed" in caplog.messages


def test_a_refused_replaces_is_retried_once_without_it() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, ari=True)
    acme = _issuer(ca, store)
    first = acme.issue(_request(), Journal())
    old = cert_id(first.certificate)
    acme.issue(_request(replaces=old), Journal())
    acme.issue(_request(replaces=old), Journal())  # the CA answers alreadyReplaced
    sent = [p.get("replaces") for p in ca.payloads("new-order")]
    assert sent == [None, old, old, None]
    assert ca.replaced == [old]


# -- the service: replaces on renewal, the window in the status -------------------------

class Setup:
    def __init__(self, *, ari: bool) -> None:
        self.challenges = Challenges()
        self.ca = FakeAcme(http01=self.challenges, ari=ari)
        self.clock = FixedClock(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        self.store = MemoryStore()
        self.due = DueIndex(self.store, clock=self.clock)
        self.service = CertificateService(
            self.store, {"fake": _issuer(self.ca, self.challenges)}, clock=self.clock,
            pools=certificate_pools(1), due_index=self.due)
        self.store.create_spec(CertificateSpec(REF, ("www.example.test",), "fake"))
        grant(self.store, CertificateSpec(REF, ("www.example.test",), "fake"))
    def status(self) -> CertificateStatus:
        found = self.store.read_status(REF)
        assert found is not None
        return found[0]

    def ari_id(self) -> str:
        leaf = self.status().current.leaf_pem  # type: ignore[union-attr]
        assert leaf is not None
        return ari_id_of(x509.load_pem_x509_certificate(leaf.encode()))


@pytest.fixture
def setup():
    made: list[Setup] = []

    def make(ari: bool = True) -> Setup:
        made.append(Setup(ari=ari))
        return made[-1]
    yield make
    for s in made:
        s.service.shutdown()


def test_the_second_issuance_replaces_the_first_and_stores_its_window(setup) -> None:
    s = setup()
    s.service.issue(REF)
    first = s.ari_id()
    window = s.status().ari
    assert window is not None and window.serial == s.status().current.serial
    assert window.next_check_at == window.checked_at + dt.timedelta(hours=6)
    s.service.issue(REF)
    assert [p.get("replaces") for p in s.ca.payloads("new-order")] == [None, first]
    assert s.status().ari.serial == s.status().current.serial != window.serial


def test_without_renewal_info_no_replaces_is_sent_and_no_window_stored(setup) -> None:
    s = setup(ari=False)
    s.service.issue(REF)
    s.service.issue(REF)
    assert [("replaces" in p) for p in s.ca.payloads("new-order")] == [False, False]
    assert s.status().ari is None


def test_a_window_moved_into_the_past_makes_the_reconciler_renew(
        setup, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setup()
    s.service.issue(REF)
    first = s.ari_id()
    decided: list[str] = []
    real = planning.decide

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        decided.append(real(*args, **kwargs).reason)
        return real(*args, **kwargs)
    monkeypatch.setattr(planning, "decide", recording)
    reconciler = Reconciler(s.store, s.service, s.due, pool=threads(8, "reconcile"), clock=s.clock)
    try:
        assert reconciler.handle(REF) == UP_TO_DATE
        now = s.clock.now()
        s.ca.windows[first] = (now - 2 * DAY, now - DAY)  # e.g. a mass revocation ahead
        assert reconciler.handle(REF) == UP_TO_DATE  # the last answer's Retry-After holds
        s.clock.advance(dt.timedelta(hours=6))
        decided.clear()
        assert reconciler.handle(REF) == ISSUED
        assert decided[0] == reissue.RENEWAL_DUE
        assert s.ca.payloads("new-order")[-1]["replaces"] == first
    finally:
        reconciler.close()


# -- the window in the decision (pure) ---------------------------------------------------

def _info(serial: str = "1") -> CertificateInfo:
    return CertificateInfo(serial=serial, not_before=T0, not_after=T0 + 90 * DAY,
                           sha256_fingerprint="ab", issuer="CN=x", issuer_name="fake",
                           dns_names=("c1.test",))


def _window(start: dt.datetime, end: dt.datetime, serial: str = "1",
            next_check: dt.datetime = T0 + DAY) -> AriWindow:
    return AriWindow(serial, start, end, checked_at=T0, next_check_at=next_check)


SPEC = CertificateSpec(REF, ("c1.test",), "fake")


@pytest.mark.parametrize("ari, now, reason", [
    pytest.param(None, T0 + 59 * DAY, reissue.UP_TO_DATE, id="no window: the default"),
    pytest.param(None, T0 + 60 * DAY, reissue.RENEWAL_DUE, id="no window: due at 2/3"),
    pytest.param(_window(T0 + 5 * DAY, T0 + 6 * DAY), T0 + DAY, reissue.UP_TO_DATE,
                 id="an early window not yet open"),
    pytest.param(_window(T0 + 5 * DAY, T0 + 6 * DAY), T0 + 6 * DAY, reissue.RENEWAL_DUE,
                 id="an early window pulls renewal forward"),
    pytest.param(_window(T0 - 2 * DAY, T0 - DAY), T0 + DAY, reissue.RENEWAL_DUE,
                 id="a window in the past: renew now"),
    pytest.param(_window(T0 - 2 * DAY, T0 - DAY, serial="2"), T0 + DAY, reissue.UP_TO_DATE,
                 id="a window for another certificate is ignored"),
    pytest.param(_window(T0 + 80 * DAY, T0 + 85 * DAY), T0 + 70 * DAY, reissue.UP_TO_DATE,
                 id="a late window replaces the default"),
])
def test_decide_with_the_cas_window(ari: AriWindow | None, now: dt.datetime,
                                    reason: str) -> None:
    status = CertificateStatus(State.VALID, current=_info(), ari=ari)
    assert planning.decide(SPEC, status, now).reason == reason


def test_next_action_at_is_inside_the_window_and_stable() -> None:
    status = CertificateStatus(State.VALID, current=_info(),
                               ari=_window(T0 + 5 * DAY, T0 + 6 * DAY,
                                           next_check=T0 + 30 * DAY))
    at = planning.next_action_at(SPEC, status, T0 + 2 * DAY)
    assert at is not None and T0 + 5 * DAY <= at <= T0 + 6 * DAY
    assert planning.next_action_at(SPEC, status, T0 + 2 * DAY) == at
    assert planning.decide(SPEC, status, at).reason == reissue.RENEWAL_DUE


def test_next_action_at_asks_the_ca_again_when_retry_after_ends() -> None:
    status = CertificateStatus(State.VALID, current=_info(),
                               ari=_window(T0 + 50 * DAY, T0 + 55 * DAY))
    assert planning.next_action_at(SPEC, status, T0) == T0 + DAY


def test_the_window_round_trips_and_old_records_have_none() -> None:
    status = CertificateStatus(State.VALID, current=_info(),
                               ari=AriWindow("1", T0, T0 + DAY, T0, T0 + DAY, "https://x"))
    assert CertificateStatus.from_json(status.to_json()) == status
    old = status.to_json()
    del old["ari"]
    assert CertificateStatus.from_json(old).ari is None


def test_retry_after_is_clamped_between_an_hour_and_a_day() -> None:
    for given, kept in [(None, 6), (dt.timedelta(minutes=1), 1), (dt.timedelta(days=9), 24),
                        (dt.timedelta(hours=3), 3)]:
        got = renewal_info.record("1", RenewalWindow(T0, T0, None, given), T0)
        assert got.next_check_at - T0 == dt.timedelta(hours=kept)
