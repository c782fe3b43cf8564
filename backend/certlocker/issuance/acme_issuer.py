"""ACME (RFC 8555) issuance with certbot's ``acme`` library.

The protocol flow is ours (resume, polling, challenge storage); JWS, nonces and message
types are the library's. This is the only module that imports ``acme``/``josepy``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Protocol

import josepy as jose
import requests
from acme import challenges, client, errors as acme_errors, messages
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import Conflict, IssuanceFailed, RateLimited
from ..models import IssuedCertificate
from ..settings import IssuerSettings
from ..x509info import info_from_pem, split_pem_chain
from . import keys
from .base import ChallengeStore, IssueRequest, Journal

log = logging.getLogger(__name__)

USER_AGENT = "certlocker/0.1 (+acme-python)"
BAD_NONCE_RETRIES = 10
POLL_FIRST = 0.05
POLL_MAX = 2.0


class AccountStore(Protocol):
    def load(self) -> tuple[dict[str, Any] | None, int]: ...

    def save(self, document: dict[str, Any], cas: int) -> int: ...


class _Network(client.ClientNetwork):
    """``ClientNetwork`` that retries ``badNonce`` as RFC 8555 section 6.5 allows.

    The library retries once; a CA under load (or Pebble with
    ``PEBBLE_WFE_NONCEREJECT``) can reject several nonces in a row. Each retry uses the
    fresh nonce the error response carried.
    """

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(BAD_NONCE_RETRIES):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")


class AcmeIssuer:
    """One ACME directory and its account, shared by every issuance of this process."""

    def __init__(self, settings: IssuerSettings, accounts: AccountStore,
                 challenge_store: ChallengeStore, *, timeout: float = 300,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = settings.name
        self.settings = settings
        self._accounts = accounts
        self._challenges = challenge_store
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client: client.ClientV2 | None = None

    # -- account -----------------------------------------------------------------------
    def client(self) -> client.ClientV2:
        """The ACME client with a registered account, created once per process. The
        account key lives in Vault, so replicas and restarts share one account."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> client.ClientV2:
        doc, version = self._accounts.load()
        if doc is None:
            key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
            doc = {"key": key.to_json(), "uri": None, "directory": self.settings.directory_url}
            try:
                version = self._accounts.save(doc, cas=0)
            except Conflict:  # another replica created it first: use theirs
                doc, version = self._accounts.load()
                assert doc is not None
        key = jose.JWK.from_json(doc["key"])
        net = _Network(key=key, alg=jose.ES256, user_agent=USER_AGENT,
                       verify_ssl=self.settings.ca_bundle or True, timeout=30)
        try:
            directory = client.ClientV2.get_directory(self.settings.directory_url, net)
            acme = client.ClientV2(directory, net)
            if doc.get("uri"):
                net.account = messages.RegistrationResource(
                    uri=doc["uri"], body=messages.Registration())
                return acme
            contact = (f"mailto:{self.settings.contact}",) if self.settings.contact else ()
            registration = messages.NewRegistration(contact=contact,
                                                    terms_of_service_agreed=True)
            try:
                regr = acme.new_account(registration)
            except acme_errors.ConflictError as exc:  # key already registered
                regr = messages.RegistrationResource(uri=exc.location,
                                                     body=messages.Registration())
                net.account = regr
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise _translate(exc, "cannot reach or register with the ACME directory") from exc
        doc = dict(doc, uri=regr.uri)
        try:
            self._accounts.save(doc, cas=version)
        except Conflict:
            pass  # a replica stored the same account URI concurrently
        return acme

    # -- issuance ----------------------------------------------------------------------
    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        acme = self.client()
        deadline = time.monotonic() + self._timeout
        state = journal.load() or {}
        try:
            orderr = self._resume(acme, request, state, journal)
            if orderr is None:
                key = keys.generate(request.key_type)
                state = {"private_key": keys.to_pem(key), "order_url": None,
                         "dns_names": list(request.dns_names), "issuer": self.name}
                journal.save(state)  # the key is durable before the CA hears of it
                orderr = acme.new_order(keys.csr_pem(key, request.dns_names),
                                        profile=self.settings.profile)
                journal.save(dict(state, order_url=orderr.uri))
            else:
                key = keys.from_pem(state["private_key"])
            body = self._drive(acme, orderr, deadline)
            fullchain = self._download(acme, body)
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise _translate(exc, "ACME issuance failed") from exc
        return _bundle(key, fullchain)

    def _resume(self, acme: client.ClientV2, request: IssueRequest, state: dict[str, Any],
                journal: Journal) -> messages.OrderResource | None:
        """Pick up an order recorded before a crash, if it is still usable."""
        if not state.get("private_key") or not state.get("order_url"):
            return None
        if sorted(state.get("dns_names") or []) != sorted(request.dns_names):
            return None  # the spec changed since: start over with a fresh key
        try:
            body = messages.Order.from_json(self._get(acme, state["order_url"]).json())
        except messages.Error:
            return None
        if body.status == messages.STATUS_INVALID:
            return None
        log.info("acme.order.resume", extra={"certificate": request.ref.id,
                                              "order_status": body.status.name})
        key = keys.from_pem(state["private_key"])
        authzrs = [acme._authzr_from_response(self._get(acme, url), uri=url)
                   for url in body.authorizations]
        return messages.OrderResource(body=body, uri=state["order_url"],
                                      authorizations=authzrs,
                                      csr_pem=keys.csr_pem(key, request.dns_names))

    def _drive(self, acme: client.ClientV2, orderr: messages.OrderResource,
               deadline: float) -> messages.Order:
        """Answer challenges, finalize, and poll until the order is valid."""
        tokens = []
        try:
            for authzr in orderr.authorizations:
                if authzr.body.status == messages.STATUS_PENDING:
                    tokens.append(self._answer_http01(acme, authzr))
            for authzr in orderr.authorizations:
                self._await_authorization(acme, authzr, deadline)
            body = self._poll_order(acme, orderr.uri, deadline, until=("ready", "valid"))
            if body.status == messages.STATUS_READY:
                try:
                    acme.begin_finalization(orderr)
                except messages.Error as exc:
                    if exc.code != "orderNotReady":
                        raise
                body = self._poll_order(acme, orderr.uri, deadline, until=("valid",))
            return body
        finally:
            for token in tokens:
                try:
                    self._challenges.delete(token)
                except Exception:  # a leftover answer is harmless and expires with the order
                    log.warning("acme.challenge.cleanup_failed")

    def _answer_http01(self, acme: client.ClientV2,
                       authzr: messages.AuthorizationResource) -> str:
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, challenges.HTTP01):
                response, validation = challb.response_and_validation(acme.net.key)
                token = challb.chall.encode("token")
                # Stored before answering: the CA may validate immediately, on any replica.
                self._challenges.put(token, validation)
                if challb.status == messages.STATUS_PENDING:
                    acme.answer_challenge(challb, response)
                return token
        raise IssuanceFailed(
            f"the CA offered no http-01 challenge for {authzr.body.identifier.value}",
            acme_code="unsupportedChallenge", retryable=False)

    def _await_authorization(self, acme: client.ClientV2,
                             authzr: messages.AuthorizationResource, deadline: float) -> None:
        delay = POLL_FIRST
        while True:
            response = self._get(acme, authzr.uri)
            body = messages.Authorization.from_json(response.json())
            if body.status == messages.STATUS_VALID:
                return
            if body.status != messages.STATUS_PENDING:
                errors = [str(c.error.detail or c.error.code) for c in body.challenges
                          if c.error is not None]
                raise IssuanceFailed(
                    f"authorization for {body.identifier.value} is {body.status}: "
                    + ("; ".join(errors) or "no detail"), acme_code="unauthorized")
            delay = self._pause(response, delay, deadline)

    def _poll_order(self, acme: client.ClientV2, url: str, deadline: float,
                    until: tuple[str, ...]) -> messages.Order:
        delay = POLL_FIRST
        while True:
            response = self._get(acme, url)
            body = messages.Order.from_json(response.json())
            if body.status.name in until:
                return body
            if body.status == messages.STATUS_INVALID:
                detail = body.error.detail if body.error is not None else "no detail"
                raise IssuanceFailed(f"the order became invalid: {detail}", acme_code=(
                    body.error.code if body.error is not None else None))
            delay = self._pause(response, delay, deadline)

    def _pause(self, response: requests.Response, delay: float, deadline: float) -> float:
        """Sleep a short, growing interval, or what the CA's Retry-After asks (RFC 8555
        section 7.5.1), whichever is longer; never past the deadline."""
        wait = delay
        retry_after = response.headers.get("Retry-After")
        if retry_after and retry_after.isdigit():
            wait = max(wait, min(float(retry_after), POLL_MAX * 5))
        if time.monotonic() + wait > deadline:
            raise IssuanceFailed("timed out waiting for the CA", acme_code="timeout")
        self._sleep(wait * random.uniform(0.9, 1.1))
        return min(delay * 1.6, POLL_MAX)

    def _download(self, acme: client.ClientV2, body: messages.Order) -> str:
        if body.certificate is None:
            raise IssuanceFailed("the order is valid but names no certificate")
        return self._get(acme, body.certificate).text

    @staticmethod
    def _get(acme: client.ClientV2, url: str) -> requests.Response:
        """POST-as-GET (RFC 8555 section 6.3)."""
        return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])


def _bundle(key: keys.PrivateKey, fullchain: str) -> IssuedCertificate:
    certs = split_pem_chain(fullchain)
    if not certs:
        raise IssuanceFailed("the CA returned no certificate")
    leaf, chain = certs[0], "".join(certs[1:])
    if not keys.public_key_matches(key, leaf):
        raise IssuanceFailed("the CA returned a certificate for another key", retryable=False)
    return IssuedCertificate(info=info_from_pem(leaf), certificate=leaf, chain=chain,
                             private_key=keys.to_pem(key))


def _translate(exc: Exception, context: str) -> IssuanceFailed:
    """acme's errors -> ours. Branch on the RFC 8555 error type, never on message text."""
    if isinstance(exc, messages.Error):
        code = exc.code or "unknown"
        if code == "rateLimited":
            return RateLimited(f"{context}: {exc.detail or code}", retry_after=None)
        retryable = code not in ("rejectedIdentifier", "unsupportedIdentifier", "caa",
                                 "badCSR", "unsupportedContact", "invalidContact")
        return IssuanceFailed(f"{context}: {code}: {exc.detail or ''}".strip(),
                              acme_code=code, retryable=retryable)
    if isinstance(exc, requests.RequestException):
        return IssuanceFailed(f"{context}: cannot reach the CA ({type(exc).__name__})",
                              acme_code="connection")
    return IssuanceFailed(f"{context}: {type(exc).__name__}: {exc}"[:500])

