"""An in-memory ACME CA behind a ``requests`` transport adapter, for unit tests.

It keeps real state (accounts, orders, authorizations), records every JWS payload it
receives, and validates challenges for real: http-01 against a ``ChallengeStore``-like
dict, dns-01 against a ``MemoryDnsProvider``'s records. Signatures are not verified:
the ``acme`` library makes them, and Pebble checks them in the integration tests.

With ``ari=True`` the directory advertises ``renewalInfo`` (RFC 9773): ``windows`` maps
ARI certificate ids to (start, end) (default: the last third of the validity), a newOrder
``replaces`` is checked (``alreadyReplaced`` on a second use) and recorded in
``replaced``; ``ari_retry_after`` is sent as Retry-After; ``ari_fail`` makes it fail.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
from typing import Any

import josepy as jose
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

BASE = "https://fake-acme.test"


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeAcme(BaseAdapter):
    def __init__(self, *, http01: dict[str, str] | None = None, dns: Any = None,
                 eab_required: bool = False, ari: bool = False,
                 profiles: dict[str, str] | None = None) -> None:
        super().__init__()
        self.ari = ari
        self.profiles = profiles  # advertised in the directory's meta.profiles
        self.windows: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        self.ari_explanation: str | None = None
        self.ari_retry_after = "21600"
        self.ari_fail = False
        self.replaced: list[str] = []
        self.issued_ids: dict[str, dt.datetime] = {}  # ARI id -> not_after
        self.http01 = http01 if http01 is not None else {}
        self.dns = dns
        self.eab_required = eab_required
        self.posts: list[tuple[str, dict[str, Any] | None]] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.authzs: dict[str, dict[str, Any]] = {}
        self.certs: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._jwk: dict[str, Any] | None = None
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake acme CA")])

    # -- what tests look at
    def payloads(self, endpoint: str) -> list[dict[str, Any] | None]:
        return [p for url, p in self.posts if url == f"{BASE}/{endpoint}"]

    @property
    def directory_url(self) -> str:
        return f"{BASE}/dir"

    # -- transport
    def close(self) -> None:
        pass

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if request.method == "GET" and url == f"{BASE}/dir":
            directory = {
                "newNonce": f"{BASE}/nonce", "newAccount": f"{BASE}/new-acct",
                "newOrder": f"{BASE}/new-order", "revokeCert": f"{BASE}/revoke",
                "keyChange": f"{BASE}/key-change"}
            if self.ari:
                directory["renewalInfo"] = f"{BASE}/renewal-info"
            body: dict[str, Any] = dict(directory)
            if self.profiles is not None:
                body["meta"] = {"profiles": self.profiles}
            return self._reply(request, 200, body)
        if request.method == "GET" and url.startswith(f"{BASE}/renewal-info/") and self.ari:
            return self._renewal_info(request, url.rsplit("/", 1)[1])
        if request.method in ("HEAD", "GET") and url == f"{BASE}/nonce":
            return self._reply(request, 200, None)
        assert request.method == "POST", (request.method, url)
        jws = json.loads(request.body or b"{}")
        protected = json.loads(_b64d(jws["protected"]))
        payload = json.loads(_b64d(jws["payload"])) if jws["payload"] else None
        self.posts.append((url, payload))
        path = url[len(BASE) + 1:]
        kind, _, ident = path.partition("/")
        handler = getattr(self, "_" + kind.replace("-", "_"), None)
        if handler is None:
            return self._problem(request, 404, "malformed", f"no route {path}")
        return handler(request, ident, payload, protected)

    def _reply(self, request: requests.PreparedRequest, status: int, body: Any, *,
               location: str | None = None, text: str | None = None) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp.url = request.url or ""
        resp.request = request
        headers = {"Replay-Nonce": _b64e(next(self._ids).to_bytes(8, "big") + b"nonce"),
                   "Content-Type": "application/json"}
        if location:
            headers["Location"] = location
        if text is not None:
            headers["Content-Type"] = "application/pem-certificate-chain"
            resp._content = text.encode()
        else:
            resp._content = b"" if body is None else json.dumps(body).encode()
        resp.headers = CaseInsensitiveDict(headers)
        return resp

    def _problem(self, request: requests.PreparedRequest, status: int, code: str,
                 detail: str) -> requests.Response:
        resp = self._reply(request, status, {"type": f"urn:ietf:params:acme:error:{code}",
                                             "detail": detail, "status": status})
        resp.headers["Content-Type"] = "application/problem+json"
        return resp

    # -- endpoints
    def _new_acct(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        if self.eab_required and not (payload or {}).get("externalAccountBinding"):
            return self._problem(request, 403, "externalAccountRequired", "EAB required")
        self._jwk = protected["jwk"]
        return self._reply(request, 201, {"status": "valid"}, location=f"{BASE}/acct/1")

    def _new_order(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        replaces = payload.get("replaces")
        if replaces is not None:
            if not self.ari or replaces not in self.issued_ids:
                return self._problem(request, 400, "malformed", "unknown replaces")
            if replaces in self.replaced:
                return self._problem(request, 409, "alreadyReplaced", replaces)
            self.replaced.append(replaces)
        oid = str(next(self._ids))
        authz_urls = []
        for i, identifier in enumerate(payload["identifiers"]):
            value = identifier["value"]
            wildcard = value.startswith("*.")
            aid = f"{oid}-{i}"
            token = _b64e(hashlib.sha256(f"{oid}{i}".encode()).digest())
            self.authzs[aid] = {
                "identifier": {"type": "dns", "value": value[2:] if wildcard else value},
                "status": "pending", "wildcard": wildcard,
                "expires": "2099-01-01T00:00:00Z",
                "challenges": [
                    {"type": t, "url": f"{BASE}/chall/{aid}/{t}", "token": token,
                     "status": "pending"} for t in (("dns-01",) if wildcard
                                                    else ("http-01", "dns-01"))]}
            authz_urls.append(f"{BASE}/authz/{aid}")
        self.orders[oid] = {"status": "pending", "identifiers": payload["identifiers"],
                            "authorizations": authz_urls, "finalize": f"{BASE}/finalize/{oid}",
                            "expires": "2099-01-01T00:00:00Z"}
        return self._reply(request, 201, self.orders[oid], location=f"{BASE}/order/{oid}")

    def _order(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        return self._reply(request, 200, self.orders[ident])

    def _authz(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        return self._reply(request, 200, self.authzs[ident])

    def _chall(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        aid, _, kind = ident.partition("/")
        authz = self.authzs[aid]
        chall = next(c for c in authz["challenges"] if c["type"] == kind)
        thumb = _b64e(jose.JWK.from_json(self._jwk).thumbprint())
        key_auth = f"{chall['token']}.{thumb}"
        name = authz["identifier"]["value"]
        if chall["type"] == "http-01":
            ok = self.http01.get(chall["token"]) == key_auth
        else:
            digest = _b64e(hashlib.sha256(key_auth.encode()).digest())
            ok = digest in (self.dns.records.get(f"_acme-challenge.{name}", []) if self.dns
                            else [])
        chall["status"] = authz["status"] = "valid" if ok else "invalid"
        for order in self.orders.values():
            if f"{BASE}/authz/{aid}" in order["authorizations"] and all(
                    self.authzs[u.rsplit("/", 1)[1]]["status"] == "valid"
                    for u in order["authorizations"]):
                order["status"] = "ready"
        resp = self._reply(request, 200, chall)
        resp.headers["Link"] = f'<{BASE}/authz/{aid}>;rel="up"'
        return resp

    def _finalize(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        order = self.orders[ident]
        if order["status"] != "ready":
            return self._problem(request, 403, "orderNotReady", order["status"])
        csr = x509.load_der_x509_csr(_b64d(payload["csr"]))
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self._ca_name).public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=7))
                .add_extension(csr.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value, critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._ca_key.public_key()), critical=False)
                .sign(self._ca_key, hashes.SHA256()))
        self.issued_ids[ari_id_of(cert)] = cert.not_valid_after_utc
        self.certs[ident] = cert.public_bytes(serialization.Encoding.PEM).decode()
        order.update(status="valid", certificate=f"{BASE}/cert/{ident}")
        return self._reply(request, 200, order, location=f"{BASE}/order/{ident}")

    def _cert(self, request, ident, payload, protected):  # type: ignore[no-untyped-def]
        return self._reply(request, 200, None, text=self.certs[ident])

    def _renewal_info(self, request: requests.PreparedRequest, ident: str) -> requests.Response:
        if self.ari_fail:
            return self._problem(request, 500, "serverInternal", "ARI is down")
        if ident not in self.issued_ids:
            return self._problem(request, 404, "malformed", "unknown certificate")
        window = self.windows.get(ident)
        if window is None:
            not_after = self.issued_ids[ident]
            window = (not_after - dt.timedelta(days=7) * 2 / 3,
                      not_after - dt.timedelta(days=7) / 3)
        body: dict[str, Any] = {"suggestedWindow": {
            "start": window[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end": window[1].strftime("%Y-%m-%dT%H:%M:%SZ")}}
        if self.ari_explanation:
            body["explanationURL"] = self.ari_explanation
        resp = self._reply(request, 200, body)
        if self.ari_retry_after:
            resp.headers["Retry-After"] = self.ari_retry_after
        return resp


def ari_id_of(cert: x509.Certificate) -> str:
    """RFC 9773 section 4.1, computed independently of certlocker's code."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number
    der = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64e(aki.key_identifier)}.{_b64e(der)}"
