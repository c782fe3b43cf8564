"""What AcmeIssuer sends to the CA, checked against an in-memory ACME CA at the transport:
profiles in newOrder (also on renewal), EAB in newAccount, dns-01 through a provider,
CAA refusing before any order, and which calls are sent again when their answer is lost."""

from __future__ import annotations

from typing import Any, Mapping

import pytest
import requests

from certlocker.errors import IssuanceFailed
from certlocker.issuance import keys
from certlocker.issuance.acme_issuer import READ_TIMEOUT, WRITE_TIMEOUT, AcmeIssuer
from certlocker.issuance.base import Inflight, IssueRequest
from certlocker.issuance.caa import CaaRecord
from certlocker.issuance.dns.memory import MemoryDnsProvider
from certlocker.models import CertificateRef, KeyType
from certlocker.settings import IssuerSettings
from tests.support.fake_acme import BASE, FakeAcme

REF = CertificateRef("dev", "web", "www")


class Accounts:
    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.version = 0

    def load(self) -> tuple[dict[str, Any] | None, int]:
        return self.doc, self.version

    def save(self, document: dict[str, Any], cas: int) -> int:
        assert cas == self.version
        self.doc, self.version = document, self.version + 1
        return self.version


class Journal:
    def __init__(self, state: Inflight | None = None) -> None:
        self.state = state

    def load(self) -> Inflight | None:
        return self.state

    def save(self, state: Inflight) -> None:
        self.state = state


class Challenges(dict):  # type: ignore[type-arg]
    def put(self, token: str, key_authorization: str) -> None:
        self[token] = key_authorization

    def delete(self, token: str) -> None:
        self.pop(token, None)


class Secrets:
    def __init__(self, eab: Mapping[str, Any] | None = None,
                 dns: Mapping[str, Any] | None = None) -> None:
        self._eab, self._dns = eab, dns

    def eab(self) -> Mapping[str, Any] | None:
        return self._eab

    def dns(self) -> Mapping[str, Any]:
        if self._dns is None:
            raise IssuanceFailed("no dns credentials", acme_code="dns")
        return self._dns


def issuer(ca: FakeAcme, store: Challenges | None = None, **settings: Any) -> AcmeIssuer:
    extra = {k: settings.pop(k) for k in ("secrets", "dns_provider", "caa_lookup")
             if k in settings}
    conf = IssuerSettings(name="fake", directory_url=ca.directory_url, **settings)
    return AcmeIssuer(conf, Accounts(), store if store is not None else Challenges(),
                      transport=ca, sleep=lambda s: None,
                      caa_lookup=extra.pop("caa_lookup", lambda name: []), **extra)


def request(*names: str) -> IssueRequest:
    return IssueRequest(REF, names, KeyType.EC_P256)


PROFILES = {"classic": "90 days", "shortlived": "6 days"}


def test_the_issuers_profile_is_sent_in_new_order_and_again_on_renewal() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, profiles=PROFILES)
    acme = issuer(ca, store, profile="shortlived")
    first = acme.issue(request("www.example.test"), Journal())
    renewed = acme.issue(IssueRequest(REF, ("www.example.test",), KeyType.EC_P256,
                                      replaces="abc.def"), Journal())
    assert [p["profile"] for p in ca.payloads("new-order")] == ["shortlived", "shortlived"]
    assert first.info.serial != renewed.info.serial


def test_the_profile_is_sent_with_replaces_when_the_ca_speaks_ari() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, profiles=PROFILES, ari=True)
    acme = issuer(ca, store, profile="shortlived")
    acme.issue(IssueRequest(REF, ("www.example.test",), KeyType.EC_P256,
                            replaces="abc.def"), Journal())
    # the CA refuses to replace a certificate it never issued: asked again without it
    first, again = ca.payloads("new-order")
    assert (first["profile"], first["replaces"]) == ("shortlived", "abc.def")
    assert again["profile"] == "shortlived" and "replaces" not in again


def test_a_certificates_own_profile_wins_over_the_issuers() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, profiles=PROFILES)
    issuer(ca, store, profile="classic").issue(
        IssueRequest(REF, ("www.example.test",), KeyType.EC_P256, profile="shortlived"),
        Journal())
    (payload,) = ca.payloads("new-order")
    assert payload["profile"] == "shortlived"


def test_no_profile_is_sent_to_a_ca_that_advertises_none() -> None:
    """Pebble 2.4 (Debian's) and most CAs today: the order goes out without it."""
    store = Challenges()
    ca = FakeAcme(http01=store)
    issued = issuer(ca, store, profile="shortlived").issue(request("www.example.test"),
                                                           Journal())
    (payload,) = ca.payloads("new-order")
    assert "profile" not in payload
    assert issued.info.serial


def test_a_profile_the_ca_does_not_offer_is_refused_before_any_order() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, profiles=PROFILES)
    with pytest.raises(IssuanceFailed) as caught:
        issuer(ca, store).issue(IssueRequest(REF, ("www.example.test",), KeyType.EC_P256,
                                             profile="tlsclient"), Journal())
    assert not caught.value.retryable and caught.value.acme_code == "invalidProfile"
    assert "classic, shortlived" in caught.value.detail
    assert ca.payloads("new-order") == []


def test_no_profile_field_when_the_issuer_names_none() -> None:
    store = Challenges()
    ca = FakeAcme(http01=store, profiles=PROFILES)
    issuer(ca, store).issue(request("www.example.test"), Journal())
    (payload,) = ca.payloads("new-order")
    assert "profile" not in payload


def test_eab_is_sent_with_new_account_when_required() -> None:
    ca = FakeAcme(eab_required=True)
    secrets = Secrets(eab={"kid": "kid-1", "hmac_key": "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"})
    issuer(ca, eab=True, secrets=secrets).client()
    (payload,) = ca.payloads("new-acct")
    binding = payload["externalAccountBinding"]
    assert set(binding) == {"protected", "payload", "signature"}
    assert b'"kid": "kid-1"' in _b64d(binding["protected"]).replace(b'":"', b'": "')


def test_eab_required_but_missing_from_vault_fails_without_asking_the_ca() -> None:
    ca = FakeAcme(eab_required=True)
    with pytest.raises(IssuanceFailed) as caught:
        issuer(ca, eab=True, secrets=Secrets()).client()
    assert caught.value.acme_code == "externalAccountRequired"
    assert not caught.value.retryable
    assert ca.payloads("new-acct") == []


def test_dns01_publishes_one_txt_per_authorization_and_cleans_up() -> None:
    dns = MemoryDnsProvider()
    ca = FakeAcme(dns=dns)
    acme = issuer(ca, challenge="dns-01", dns={"provider": "memory"}, dns_provider=dns)
    issued = acme.issue(request("example.test", "*.example.test"), Journal())
    presented = [entry for entry in dns.log if entry[0] == "present"]
    # the wildcard and its base name share one TXT name with two values (RFC 8555 8.4)
    assert {fqdn for _, fqdn, _ in presented} == {"_acme-challenge.example.test"}
    assert len({value for _, _, value in presented}) == 2
    assert dns.records == {"_acme-challenge.example.test": []}
    assert keys.public_key_matches(keys.from_pem(issued.private_key), issued.certificate)


def test_caa_refusal_stops_before_any_order() -> None:
    ca = FakeAcme()
    records = {"example.test": [CaaRecord(0, "issue", "other-ca.test")]}
    acme = issuer(ca, caa_identities=("fake-ca.test",),
                  caa_lookup=lambda name: records.get(name, []))
    with pytest.raises(IssuanceFailed) as caught:
        acme.issue(request("www.example.test"), Journal())
    assert caught.value.acme_code == "caa" and not caught.value.retryable
    assert "other-ca.test" in caught.value.detail and "example.test" in caught.value.detail
    assert ca.payloads("new-order") == []


def _b64d(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_an_issuer_without_a_directory_url_is_refused_when_built() -> None:
    from certlocker.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="directory_url"):
        AcmeIssuer(IssuerSettings(name="nowhere"), Accounts(), Challenges(),
                   caa_lookup=lambda name: [])


def test_the_spec_parser_reads_a_profile_and_refuses_nonsense() -> None:
    from certlocker import specs
    from certlocker.errors import InvalidInput
    base = {"environment": "dev", "service": "web", "name": "www",
            "dns_names": ["www.example.test"], "issuer": "fake"}
    spec = specs.parse({**base, "profile": "shortlived"}, specs.PERMISSIVE)
    assert spec.profile == "shortlived"
    assert type(spec).from_json(spec.to_json()) == spec
    for bad in ("short lived", "", "x" * 65, 7, "../p"):
        with pytest.raises(InvalidInput) as caught:
            specs.parse({**base, "profile": bad}, specs.PERMISSIVE)
        assert caught.value.field == "profile"


class LossyCa(FakeAcme):
    """Loses the answer to the first POST to one endpoint (``order``: POST-as-GET polls,
    ``finalize``: the write), as a connection that stalls until its timeout."""

    def __init__(self, lose: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lose, self.lost = lose, 0
        self.waited: object = None  # the timeout the lost call was given

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if (not self.lost and request.method == "POST"
                and (request.url or "").startswith(f"{BASE}/{self.lose}/")):
            self.lost, self.waited = 1, kwargs.get("timeout")
            super().send(request, **kwargs)  # the CA acted on it; the answer is lost
            raise requests.ReadTimeout("read timed out")
        return super().send(request, **kwargs)


def test_a_poll_whose_answer_is_lost_is_asked_again_and_the_issuance_goes_on() -> None:
    store = Challenges()
    ca = LossyCa("order", http01=store)
    issued = issuer(ca, store).issue(request("www.example.test"), Journal())
    assert ca.lost == 1 and issued.info.dns_names == ("www.example.test",)
    assert ca.waited == READ_TIMEOUT < WRITE_TIMEOUT  # a read's answer is not waited for long
    assert sum(url.startswith(f"{BASE}/order/") for url, _ in ca.posts) >= 2


def test_a_finalization_whose_answer_is_lost_is_not_sent_again() -> None:
    store = Challenges()
    ca = LossyCa("finalize", http01=store)
    with pytest.raises(IssuanceFailed, match=r"cannot reach the CA \(read timed out\)"):
        issuer(ca, store).issue(request("www.example.test"), Journal())
    assert sum(url.startswith(f"{BASE}/finalize/") for url, _ in ca.posts) == 1
    assert ca.waited == WRITE_TIMEOUT
