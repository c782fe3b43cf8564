"""certlocker uses three private attributes of certbot's ``acme``, only in
``certlocker/issuance/acme_compat.py``. These tests fail, naming the attribute, when an
acme upgrade removes one or changes what it does: update that module (and the pin in
pyproject.toml) then. The CA is the in-memory one of tests/support at the transport."""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Any

import josepy as jose
import pytest
import requests
from acme import messages
from acme.client import ClientNetwork, ClientV2
from cryptography.hazmat.primitives.asymmetric import ec
from requests.structures import CaseInsensitiveDict

from certlocker.issuance import acme_compat
from certlocker.issuance.acme_issuer import _Network
from tests.support.fake_acme import BASE, FakeAcme


def test_the_installed_acme_has_what_certlocker_uses_privately() -> None:
    gone = acme_compat.missing()
    assert gone == [], (
        f"acme {version('acme')} no longer has {', '.join(gone)}, which certlocker uses in "
        "certlocker/issuance/acme_compat.py: adapt that module to this acme")


def test_a_removed_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself: an acme without ``ClientV2._get_links`` is reported."""
    monkeypatch.delattr(ClientV2, "_get_links")
    assert acme_compat.missing() == ["acme.client.ClientV2._get_links"]


class _NonceRefusingCa(FakeAcme):
    """Refuses the first ``refusals`` newAccount requests with ``badNonce``."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def _new_acct(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        if self.refusals > 0:
            self.refusals -= 1
            return self._problem(request, 400, "badNonce", "stale nonce")
        return super()._new_acct(request, ident, payload, protected)


def _network(ca: FakeAcme, kind: type[ClientNetwork] = ClientNetwork) -> ClientNetwork:
    net = kind(key=jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1())), alg=jose.ES256,
               user_agent="certlocker-test")
    net.session = requests.Session()
    net.session.mount("https://", ca)
    return net


def _register(net: ClientNetwork, post: Any) -> requests.Response:
    body = messages.NewRegistration(terms_of_service_agreed=True)
    response: requests.Response = post(net, f"{BASE}/new-acct", body,
                                       new_nonce_url=f"{BASE}/nonce")
    return response


def test_post_once_sends_one_signed_post_and_does_not_retry_a_bad_nonce() -> None:
    ca = _NonceRefusingCa(refusals=1)
    net = _network(ca)
    with pytest.raises(messages.Error) as refused:
        _register(net, acme_compat.post_once)
    assert refused.value.code == "badNonce"
    assert len(ca.payloads("new-acct")) == 1
    assert _register(net, acme_compat.post_once).status_code == 201


def test_certlockers_network_retries_bad_nonces_through_post_once() -> None:
    ca = _NonceRefusingCa(refusals=3)  # acme's own post gives up after the second
    response = _register(_network(ca, _Network), lambda net, *a, **k: net.post(*a, **k))
    assert response.status_code == 201
    assert len(ca.payloads("new-acct")) == 4


def _response(body: dict[str, Any] | None, headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response.headers = CaseInsensitiveDict(headers)
    response._content = json.dumps(body).encode() if body is not None else b""
    return response


def _client() -> ClientV2:
    directory = messages.Directory({"newNonce": f"{BASE}/nonce",
                                    "newOrder": f"{BASE}/new-order"})
    return ClientV2(directory, ClientNetwork(key=None))


def test_an_authorization_is_parsed_with_the_uri_it_was_fetched_from() -> None:
    body = {"identifier": {"type": "dns", "value": "www.example.test"}, "status": "pending",
            "challenges": [{"type": "http-01", "url": f"{BASE}/chall/1", "token": "A" * 43,
                            "status": "pending"}]}
    authzr = acme_compat.authorization(_client(), _response(body, {}), f"{BASE}/authz/1")
    assert isinstance(authzr, messages.AuthorizationResource)
    assert authzr.uri == f"{BASE}/authz/1"
    assert authzr.body.identifier.value == "www.example.test"
    assert authzr.body.status == messages.STATUS_PENDING
    assert [c.chall.typ for c in authzr.body.challenges] == ["http-01"]


def test_every_link_of_a_relation_is_kept() -> None:
    response = _response(None, {"Link": f'<{BASE}/cert/1/alt/1>;rel="alternate", '
                                         f'<{BASE}/directory>;rel="index", '
                                         f'<{BASE}/cert/1/alt/2>;rel="alternate"'})
    assert acme_compat.links(_client(), response, "alternate") == [
        f"{BASE}/cert/1/alt/1", f"{BASE}/cert/1/alt/2"]
    assert acme_compat.links(_client(), _response(None, {}), "alternate") == []
