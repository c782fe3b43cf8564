"""Driving certlocker's ACME server with the ``acme`` library (certbot's), as a client
would: EAB bindings from the API, accounts, orders finalized with the client's own CSR,
and raw signed requests for the protocol's error cases."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import josepy as jose
import requests
from acme import client as acme_client
from acme import crypto_util, jws as acme_jws, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def binding(api_url: str, token: str, env: str, service: str) -> dict[str, Any]:
    """``POST /v1/services/<env>/<service>/acme-accounts`` with an operator's token."""
    resp = requests.post(f"{api_url}/v1/services/{env}/{service}/acme-accounts",
                         headers={"X-Vault-Token": token}, timeout=30)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def ec_key() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def rsa_key(bits: int = 2048) -> jose.JWKRSA:
    return jose.JWKRSA(key=rsa.generate_private_key(65537, bits))


def client(directory_url: str, key: jose.JWK | None = None) -> acme_client.ClientV2:
    key = key or ec_key()
    alg = jose.RS256 if isinstance(key, jose.JWKRSA) else jose.ES256
    net = acme_client.ClientNetwork(key, alg=alg, user_agent="certlocker-tests")
    directory = messages.Directory.from_json(net.get(directory_url).json())
    return acme_client.ClientV2(directory, net)


def register(acme: acme_client.ClientV2, eab: dict[str, Any],
             email: str = "ops@example.test") -> messages.RegistrationResource:
    assert acme.net.key is not None
    binding_jws = messages.ExternalAccountBinding.from_data(
        account_public_key=acme.net.key.public_key(), kid=eab["eab_kid"],
        hmac_key=eab["eab_hmac_key"], directory=acme.directory)
    account = acme.new_account(messages.NewRegistration.from_data(
        email=email, terms_of_service_agreed=True, external_account_binding=binding_jws))
    acme.net.account = account
    return account


@dataclasses.dataclass(frozen=True)
class Obtained:
    fullchain: str
    key_pem: bytes = dataclasses.field(repr=False)
    order: messages.OrderResource


def new_order(acme: acme_client.ClientV2, names: list[str], key: Any = None,
              ) -> tuple[messages.OrderResource, bytes]:
    """newOrder with a CSR of a key made here (the node's key); the order and the key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return acme.new_order(crypto_util.make_csr(key_pem, names)), key_pem


def obtain(acme: acme_client.ClientV2, names: list[str], *, timeout: float = 120,
           key: Any = None) -> Obtained:
    """newOrder, then finalize with a CSR of a key made here (the node's key)."""
    order, key_pem = new_order(acme, names, key)
    import datetime as dt

    done = acme.poll_and_finalize(order, dt.datetime.now() + dt.timedelta(seconds=timeout))
    assert done.fullchain_pem, done
    return Obtained(done.fullchain_pem, key_pem, done)


def signed_post(url: str, payload: Any, key: jose.JWK, *, nonce: str | None,
                kid: str | None = None, alg: Any = None, sign_url: str | None = None,
                content_type: str = "application/jose+json") -> requests.Response:
    """One raw request, for the cases a well-behaved client never sends."""
    body = b"" if payload is None else json.dumps(payload).encode()
    alg = alg or (jose.RS256 if isinstance(key, jose.JWKRSA) else jose.ES256)
    signed = acme_jws.JWS.sign(body, key=key, alg=alg,
                               nonce=jose.decode_b64jose(nonce) if nonce else None,
                               url=sign_url or url, kid=kid)
    return requests.post(url, data=signed.json_dumps(), timeout=30,
                         headers={"Content-Type": content_type})


def fresh_nonce(directory: dict[str, Any]) -> str:
    return str(requests.head(directory["newNonce"], timeout=30).headers["Replay-Nonce"])


def problem_type(resp: requests.Response) -> str:
    assert resp.headers["Content-Type"].startswith("application/problem+json"), resp.text
    return str(resp.json()["type"]).removeprefix("urn:ietf:params:acme:error:")
