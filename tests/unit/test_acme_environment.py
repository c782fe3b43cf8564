"""The ACME session reads its environment once: a CA bundle variable is honoured
without requests re-reading the environment on every call, and a proxy still is
(through plain requests, which reads it per call)."""

from __future__ import annotations

import pytest

from certlocker.transport import netenv
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.transport.acme_session import LeanSession, session_for
from certlocker.lifecycle.records.vault_adapters import StoreAccounts, StoreChallenges
from certlocker.settings import IssuerSettings
from tests.support.fake_acme import FakeAcme
from tests.support.memory_store import MemoryStore


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in netenv.PROXY_VARIABLES + netenv.CA_BUNDLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def issuer(ca_bundle: str | None = None) -> AcmeIssuer:
    store, ca = MemoryStore(), FakeAcme()
    conf = IssuerSettings(name="fake", directory_url=ca.directory_url, ca_bundle=ca_bundle)
    return AcmeIssuer(conf, StoreAccounts(store, ca.directory_url), StoreChallenges(store),
                      transport=ca, sleep=lambda s: None, caa_lookup=lambda name: [])


def test_a_ca_bundle_variable_is_read_once_not_per_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/curl-bundle.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/requests-bundle.pem")
    net = issuer().client().net
    assert net.verify_ssl == "/etc/requests-bundle.pem"  # requests' own precedence
    assert net.session.trust_env is False


def test_the_configured_ca_bundle_wins_over_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/requests-bundle.pem")
    assert issuer("/etc/pebble.pem").client().net.verify_ssl == "/etc/pebble.pem"


def test_without_any_variable_the_system_store_is_used() -> None:
    net = issuer().client().net
    assert net.verify_ssl is True and net.session.trust_env is False


def test_without_a_proxy_the_session_is_lean_and_reads_no_environment() -> None:
    session = session_for(None)
    assert isinstance(session, LeanSession) and session.trust_env is False


def test_a_proxy_variable_makes_requests_read_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    session = session_for(None)
    assert not isinstance(session, LeanSession) and session.trust_env is True


def test_a_given_transport_is_mounted_on_a_plain_session() -> None:
    ca = FakeAcme()
    session = session_for(ca)
    assert not isinstance(session, LeanSession)
    assert session.get_adapter(ca.directory_url) is ca
