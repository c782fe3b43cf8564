"""ACME (RFC 8555) issuance with certbot's ``acme`` library.

The protocol flow is ours (resume, polling, challenge storage); JWS, nonces and message
types are the library's. Only ``issuance/`` imports ``acme``/``josepy``, and the few
private parts of ``acme`` this flow needs are reached through ``acme_compat``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import threading
import time
from typing import Any, Callable, Mapping, Sequence, TypeVar

import josepy as jose
import requests
from acme import crypto_util, errors as acme_errors, messages
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ..transport import netenv
from ..audit.recorder import Auditor, NoAudit, audited
from ..errors import (ConfigurationError, Conflict, IssuanceFailed, RateLimited,
                      RevocationFailed)
from ..models import Inflight, IssuedCertificate, IssueRequest, RenewalWindow
from ..ports import AccountStore, ChallengeStore, IssuerSecrets, Journal
from ..settings import IssuerSettings
from ..transport.failures import failure_reason
from . import acme_compat, ari, caa, chains, keys
from .dns import DnsProvider, build_provider
from ..transport.acme_session import NoRequestObserver, RequestObserver, observed, session_for
from .solvers import Dns01Solver, Http01Solver, Presented, Solver

log = logging.getLogger(__name__)

USER_AGENT = "certlocker/0.1 (+acme-python)"
BAD_NONCE_RETRIES = 25  # 0.5^25: even a CA refusing half of all nonces gets through
POLL_FIRST = 0.05
POLL_MAX = 1.0
#: a POST-as-GET is sent at most this often when its answer is lost (``_Network``),
#: each time waiting at most this long to connect and this long for the answer: a CA
#: answers a read at once, while a write (finalization above all) may take it a while
READ_ATTEMPTS = 2
READ_TIMEOUT = 10
WRITE_TIMEOUT = 30
#: RFC 8555 section 6.7: the CA does not know the account the request was signed for
ACCOUNT_GONE = "accountDoesNotExist"

T = TypeVar("T")
# A CA's Retry-After past this is taken as this: a timedelta of 10^30 s overflows.
MAX_RETRY_AFTER = dt.timedelta(days=365)


class _NewOrder(messages.NewOrder):
    """newOrder with RFC 9773 section 5's ``replaces``, which ``acme`` lacks."""

    replaces: str | None = jose.field("replaces", omitempty=True)


#: the Retry-After of the last error answer this thread received from a CA (acme's
#: ``messages.Error`` does not keep the response's headers)
_LAST_RETRY_AFTER = threading.local()


class Pacer:
    """At most ``per_second`` requests to one CA from this process (its limits'
    ``requests_per_second``), shared by every account of the issuer. Per process: a
    Vault round trip per request would cost more than the request it paces."""

    def __init__(self, per_second: float, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / per_second
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            at = max(now, self._next)
            self._next = at + self._interval
        if at > now:
            self._sleep(at - now)


class _Network(ClientNetwork):
    """``ClientNetwork`` that retries ``badNonce`` as RFC 8555 section 6.5 allows.

    The library retries once; a CA under load (or Pebble with
    ``PEBBLE_WFE_NONCEREJECT``) can reject several nonces in a row. Each retry uses the
    fresh nonce the error response carried.
    """

    observer: RequestObserver = NoRequestObserver()
    pacer: Pacer | None = None

    def _send_request(self, method: str, url: str, *args: Any,
                      **kwargs: Any) -> requests.Response:
        """Every request the client sends, counted by status and endpoint (a 429 is a
        CA's rate limit), paced when the issuer's limits ask, and the Retry-After of an
        error answer kept for ``_translate`` (RFC 8555 section 6.6)."""
        if self.pacer is not None:
            self.pacer.wait()
        response: requests.Response = observed(self.observer, method, url, lambda:
                                               acme_compat.send_request(self, method, url,
                                                                        *args, **kwargs))
        if response.status_code >= 400:
            _LAST_RETRY_AFTER.value = _retry_after(response.headers.get("Retry-After"))
        return response

    def post(self, url: str, obj: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """A POST-as-GET (``obj`` None: RFC 8555 section 6.3) changes nothing at the CA,
        so one whose answer never came (a timeout, a dropped connection) is asked once
        more, on a new connection: a poll lost on the way costs its timeout, not the
        issuance. A write is sent once."""
        if obj is not None:
            return self._post(url, obj, *args, **kwargs)
        kwargs.setdefault("timeout", READ_TIMEOUT)
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self._post(url, obj, *args, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt == READ_ATTEMPTS or isinstance(exc, requests.exceptions.SSLError):
                    raise
                log.warning("acme.read.retried", extra={"url": url,
                                                        "error": failure_reason(exc)})
        raise AssertionError("unreachable")

    def _post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(BAD_NONCE_RETRIES):
            try:
                return acme_compat.post_once(self, *args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")


class AcmeIssuer:
    """One ACME directory and its account, shared by every issuance of this process."""

    def __init__(self, settings: IssuerSettings, accounts: AccountStore,
                 challenge_store: ChallengeStore, *, timeout: float = 300,
                 sleep: Callable[[float], None] = time.sleep,
                 secrets: IssuerSecrets | None = None,
                 dns_provider: DnsProvider | None = None,
                 caa_lookup: caa.Lookup | None = None,
                 transport: requests.adapters.BaseAdapter | None = None,
                 audit: Auditor | None = None, actor: str = "certlocker",
                 request_observer: RequestObserver | None = None,
                 pacer: Pacer | None = None) -> None:
        """``secrets`` gives EAB and dns-01 credentials from Vault; ``dns_provider``
        defaults to the one ``settings.dns`` names; ``caa_lookup`` to a resolver at
        ``settings.caa_resolver``; ``transport``, when given, carries every HTTP request;
        ``audit`` records each account this process registers at the CA (as ``actor``);
        ``request_observer`` is told of every HTTP request to the CA (metrics).

        :raises ConfigurationError: when the settings name no directory URL (their
            ``validate`` refuses that too), or dns-01 is chosen and no provider can be built.
        """
        if not settings.directory_url:
            raise ConfigurationError(f"issuers.{settings.name}.directory_url is required")
        self.name = settings.name
        self.settings = settings
        self._directory_url = settings.directory_url
        self._accounts = accounts
        self._challenges = challenge_store
        self._secrets = secrets
        self._transport = transport
        self._caa_lookup = caa_lookup or caa.DnsCaaLookup(settings.caa_resolver)
        self._solver: Solver = Http01Solver(challenge_store)
        if settings.challenge == "dns-01":
            self._solver = Dns01Solver(dns_provider or build_provider(
                settings.name, settings.dns, self._dns_credentials))
        self._timeout = timeout
        self._sleep = sleep
        self._audit = audit or NoAudit()
        self._actor = actor
        self._requests = request_observer or NoRequestObserver()
        self._pacer = pacer
        self._lock = threading.Lock()
        self._client: ClientV2 | None = None
        self._account_version = 0  # the stored account document the client was built from

    # -- account -----------------------------------------------------------------------
    def client(self) -> ClientV2:
        """The ACME client with a registered account, created once per process. The
        account key lives in Vault, so replicas and restarts share one account."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> ClientV2:
        doc, version = self._accounts.load()
        if doc is None:
            doc = self._new_account_document()
            try:
                version = self._accounts.save(doc, cas=0)
            except Conflict:  # another replica created it first: use theirs
                doc, version = self._accounts.load()
                assert doc is not None
        return self._open(doc, version)

    def _new_account_document(self, replaces: str | None = None) -> dict[str, Any]:
        key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        doc: dict[str, Any] = {"key": key.to_json(), "uri": None,
                               "directory": self.settings.directory_url}
        if replaces:
            doc["replaces"] = replaces
        return doc

    def _open(self, doc: dict[str, Any], version: int) -> ClientV2:
        """A client for the stored account ``doc`` (at ``version``), registering its key
        at the CA when the document has no account URL yet. Whoever registers (one
        ``newAccount`` that creates the account; a replica racing with the same key is
        answered with the existing one) records ``acme.account.registered``."""
        key = jose.JWK.from_json(doc["key"])
        assert isinstance(key, jose.JWK)  # from_json is typed as returning the base class
        # The CA bundle variables are read here, once (see http.session_for).
        net = _Network(key=key, alg=jose.ES256, user_agent=USER_AGENT,
                       # acme annotates verify_ssl as bool, but hands it to requests'
                       # ``verify``, which takes a CA bundle path as well.
                       verify_ssl=(self.settings.ca_bundle  # type: ignore[arg-type]
                                   or netenv.ca_bundle() or True),
                       timeout=WRITE_TIMEOUT)
        net.session = session_for(self._transport)
        net.observer = self._requests
        net.pacer = self._pacer
        created = False
        try:
            directory = ClientV2.get_directory(self._directory_url, net)
            acme = ClientV2(directory, net)
            if doc.get("uri"):
                net.account = messages.RegistrationResource(
                    uri=doc["uri"], body=messages.Registration())
                self._account_version = version
                return acme
            contact = (f"mailto:{self.settings.contact}",) if self.settings.contact else ()
            registration = messages.NewRegistration(
                contact=contact, terms_of_service_agreed=True,
                external_account_binding=self._eab(key, directory))
            try:
                regr = acme.new_account(registration)
                created = True
            except acme_errors.ConflictError as exc:  # key already registered
                regr = messages.RegistrationResource(uri=exc.location,
                                                     body=messages.Registration())
                net.account = regr
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise _translate(exc, "cannot reach or register with the ACME directory") from exc
        doc = dict(doc, uri=regr.uri)
        try:
            self._account_version = self._accounts.save(doc, cas=version)
        except Conflict:  # a replica stored the same account URI concurrently
            self._account_version = self._accounts.load()[1]
        if created:
            log.info("acme.account.registered", extra={
                "issuer": self.name, "account": regr.uri, "replaces": doc.get("replaces")})
            audited(self._audit, self._actor, "acme.account.registered",
                    f"acme-account:{self.name}", "success", details={
                        "issuer": self.name, "directory": self.settings.directory_url,
                        "account": regr.uri, "replaces": doc.get("replaces"),
                        "external_account_binding": bool(self.settings.eab)})
        return acme

    def _with_account(self, operation: Callable[[ClientV2], T]) -> T:
        """Run ``operation`` with the account; when the CA answers that it does not know
        the account (its state was reset), recover it (``_recover``) and run it once
        more. Raises acme's errors as they come."""
        acme = self.client()
        try:
            return operation(acme)
        except messages.Error as exc:
            if exc.code != ACCOUNT_GONE:
                raise
            log.warning("acme.account.unknown_to_ca", extra={
                "issuer": self.name, "account": getattr(acme.net.account, "uri", None)})
        return operation(self._recover(acme))

    def _recover(self, stale: ClientV2) -> ClientV2:
        """The account after the CA forgot ``stale``'s: the one another process stored
        since this one read it (the version in Vault moved on), else a new account,
        registered once for all processes. The new key is claimed in Vault with
        check-and-set before it is registered, so of several processes that meet the
        forgotten account at once, one registers and the others pick its account up.

        :raises IssuanceFailed: when the CA cannot be reached or refuses the account.
        """
        with self._lock:
            if self._client is not None and self._client is not stale:
                return self._client  # another thread of this process recovered already
            doc, version = self._accounts.load()
            if doc is not None and version != self._account_version:
                log.info("acme.account.reloaded", extra={"issuer": self.name,
                                                         "account": doc.get("uri")})
            else:
                fresh = self._new_account_document(
                    replaces=(doc or {}).get("uri") or getattr(stale.net.account, "uri", None))
                try:
                    version = self._accounts.save(fresh, cas=version)
                    doc = fresh
                except Conflict:  # another process claimed the replacement first
                    doc, version = self._accounts.load()
                    assert doc is not None
            self._client = None
            self._client = self._open(doc, version)
            return self._client

    # -- issuance ----------------------------------------------------------------------
    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        deadline = time.monotonic() + self._timeout
        _LAST_RETRY_AFTER.value = None
        try:
            return self._with_account(
                lambda acme: self._issue_with(acme, request, journal, deadline))
        except (messages.Error, acme_errors.Error, requests.RequestException) as exc:
            raise _translate(exc, "ACME issuance failed") from exc

    def _issue_with(self, acme: ClientV2, request: IssueRequest, journal: Journal,
                    deadline: float) -> IssuedCertificate:
        if request.csr_pem is not None:
            return self._issue_for_csr(acme, request, request.csr_pem, deadline)
        state = journal.load()
        orderr = self._resume(acme, request, state, journal)
        resumed = orderr is not None
        if orderr is None:
            self._check_caa(acme, request)
            key = self._journaled_key(request, state) or keys.generate(request.key_type)
            # newOrder names only the identifiers (RFC 8555 section 7.4); the key
            # reaches the CA with the CSR at finalization. So one journal write, after
            # the order exists and before anything is answered or finalized, makes
            # the key and the order durable before the CA hears of the key. A crash
            # before it leaves an order nobody answers, which expires at the CA.
            orderr = self._new_order(acme, keys.csr_pem(key, request.dns_names),
                                     request.replaces, request.profile)
            journal.save(Inflight(private_key=keys.to_pem(key), order_url=orderr.uri,
                                  dns_names=request.dns_names, issuer=self.name,
                                  key_type=request.key_type.value))
        else:
            assert state is not None and state.private_key is not None  # resumed from it
            key = keys.from_pem(state.private_key)
        body = self._drive(acme, orderr, deadline, resumed=resumed)
        fullchain = self._download(acme, body)
        return keys.bundle(fullchain, key)

    def _issue_for_csr(self, acme: ClientV2, request: IssueRequest, csr_pem: str,
                       deadline: float) -> IssuedCertificate:
        """An order for a client-held key: its CSR as sent, nothing journaled (there is no
        key to lose; an order left by a crash expires at the CA and the next attempt
        places a new one)."""
        self._check_caa(acme, request)
        orderr = self._new_order(acme, csr_pem.encode(), request.replaces, request.profile)
        body = self._drive(acme, orderr, deadline)
        return keys.bundle(self._download(acme, body), csr_pem=csr_pem)

    def _new_order(self, acme: ClientV2, csr_pem: bytes, replaces: str | None,
                   wanted_profile: str | None = None) -> messages.OrderResource:
        """newOrder, naming the certificate it ``replaces`` (RFC 9773 section 5) when the
        CA speaks ARI, and the profile (``_profile``) when the CA offers it. A CA that
        refuses the order with ``replaces`` (``alreadyReplaced``, or any other problem)
        is asked once more without it: ARI is advisory.

        :raises IssuanceFailed: the CA offers profiles, but not the one asked for.
        """
        profile = self._profile(acme, wanted_profile)
        if replaces is None or not _has_ari(acme):
            return acme.new_order(csr_pem, profile=profile)
        csr = x509.load_pem_x509_csr(csr_pem)
        names, _ = crypto_util.get_identifiers_from_x509(csr.subject, csr.extensions)
        order = _NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN,
                                                           value=name) for name in names],
                          profile=profile or None, replaces=replaces)
        try:
            response = acme.net.post(acme.directory["newOrder"], order,
                                     new_nonce_url=acme.directory["newNonce"])
        except (messages.Error, acme_errors.ConflictError) as exc:
            # acme raises ConflictError, without the problem, for RFC 9773's 409.
            log.warning("acme.order.replaces_refused", extra={
                "replaces": replaces, "acme_code": getattr(exc, "code", "alreadyReplaced")})
            return acme.new_order(csr_pem, profile=profile)
        body = messages.Order.from_json(response.json())
        return messages.OrderResource(
            body=body, uri=response.headers.get("Location"), csr_pem=csr_pem,
            authorizations=[acme_compat.authorization(acme, self._get(acme, url), url)
                            for url in body.authorizations])

    def _profile(self, acme: ClientV2, wanted: str | None) -> str | None:
        """The profile to send in newOrder: the certificate's (``IssueRequest.profile``),
        else the issuer's (``IssuerSettings.profile``), and only when the directory
        advertises profiles. A CA that advertises none gets no ``profile`` field (a
        server without profiles may reject an order with one; it issues its one kind).
        One that advertises others is not asked (draft-ietf-acme-profiles section 4:
        it would reject the order with ``invalidProfile``), so the refusal is told
        here, before an order, and not retried: the spec or the settings must change.

        :raises IssuanceFailed: not retryable, when the CA offers profiles but not this.
        """
        wanted = wanted or self.settings.profile
        if not wanted:
            return None
        offered = _offered_profiles(acme)
        if not offered:
            log.info("acme.profile_not_offered", extra={"issuer": self.name,
                                                        "profile": wanted})
            return None
        if wanted not in offered:
            raise IssuanceFailed(f"the CA of issuer {self.name!r} offers the profiles "
                                 f"{', '.join(sorted(offered))}, not {wanted!r}",
                                 acme_code="invalidProfile", retryable=False)
        return wanted

    # -- renewal information (RFC 9773) --------------------------------------------------
    def renewal_info(self, certificate_pem: str) -> RenewalWindow | None:
        """The CA's suggested renewal window for a certificate, when the directory
        advertises ``renewalInfo``; None otherwise, and None (with a log line) when the
        CA cannot be asked or answers nonsense: ARI is advisory, so this never raises."""
        ident = ari.cert_id(certificate_pem)
        if ident is None:
            return None
        try:
            acme = self.client()
            if not _has_ari(acme):
                return None
            url = acme.directory["renewalInfo"].rstrip("/") + "/" + ident
            response = acme.net.get(url, content_type="application/json")
            document = response.json()
            window = messages.RenewalInfo.from_json(document).suggested_window
            # acme annotates both as datetime, but they are omitempty: None when missing.
            start: dt.datetime | None = window.start
            end: dt.datetime | None = window.end
        except (IssuanceFailed, messages.Error, acme_errors.Error, jose.DeserializationError,
                requests.RequestException, ValueError, TypeError, AttributeError) as exc:
            log.warning("acme.renewal_info.failed", extra={
                "issuer": self.name, "ari_id": ident, "error": type(exc).__name__})
            return None
        if start is None or end is None:
            return None
        explanation = document.get("explanationURL")
        return RenewalWindow(
            start=start.astimezone(dt.timezone.utc), end=end.astimezone(dt.timezone.utc),
            explanation_url=explanation if isinstance(explanation, str) else None,
            retry_after=_retry_after(response.headers.get("Retry-After")))

    def _journaled_key(self, request: IssueRequest,
                       state: Inflight | None) -> keys.PrivateKey | None:
        """The key saved before a crash that came before any order was recorded (or whose
        order is gone): reused when it still fits the request, so one issuance has one key.
        The journal is cleared once a certificate is stored, so a key in use never comes
        back here."""
        if (state is not None and state.private_key and state.issuer == self.name
                and state.key_type == request.key_type.value
                and state.for_names(request.dns_names)):
            return keys.from_pem(state.private_key)
        return None

    # -- revocation --------------------------------------------------------------------
    def revoke(self, certificate_pem: str, reason: int) -> None:
        """Revoke a certificate this account ordered (RFC 8555 section 7.6), signed with
        the account key: certlocker never holds the certificate's key. ``reason`` is an
        RFC 5280 CRLReason code. An already revoked certificate counts as revoked.

        :raises RevocationFailed: when the CA refuses or cannot be reached.
        """
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        try:
            self._with_account(lambda acme: acme.revoke(cert, reason))
        except messages.Error as exc:
            if exc.code == "alreadyRevoked":
                return
            raise RevocationFailed(f"the CA refused to revoke: {exc.code}: {exc.detail or ''}"
                                   .strip(), acme_code=exc.code) from exc
        except IssuanceFailed as exc:
            raise RevocationFailed(exc.detail, acme_code=exc.acme_code) from exc
        except (acme_errors.Error, requests.RequestException) as exc:
            raise RevocationFailed(f"revocation failed: {type(exc).__name__}",
                                   acme_code="connection") from exc

    def _resume(self, acme: ClientV2, request: IssueRequest, state: Inflight | None,
                journal: Journal) -> messages.OrderResource | None:
        """Pick up an order recorded before a crash, if it is still usable."""
        if state is None or not state.private_key or not state.order_url:
            return None
        if not state.for_names(request.dns_names):
            return None  # the spec changed since: start over with a fresh key
        try:
            body = messages.Order.from_json(self._get(acme, state.order_url).json())
        except messages.Error:
            return None
        if body.status == messages.STATUS_INVALID:
            self._forget(acme, body.authorizations)
            return None
        log.info("acme.order.resume", extra={"certificate": request.ref.id,
                                              "order_status": body.status.name})
        key = keys.from_pem(state.private_key)
        authzrs = [acme_compat.authorization(acme, self._get(acme, url), url)
                   for url in body.authorizations]
        return messages.OrderResource(body=body, uri=state.order_url,
                                      authorizations=authzrs,
                                      csr_pem=keys.csr_pem(key, request.dns_names))

    def _forget(self, acme: ClientV2, authorization_urls: Sequence[str]) -> None:
        """Remove the answers a crashed process published for an order that is now
        abandoned, so none outlives it in shared storage."""
        for url in authorization_urls:
            try:
                authzr = acme_compat.authorization(acme, self._get(acme, url), url)
                self._present(acme, authzr).cleanup()
            except Exception:  # noqa: BLE001 - best effort: the order is gone either way
                log.warning("acme.challenge.cleanup_failed",
                            extra={"challenge": self._solver.name})

    def _drive(self, acme: ClientV2, orderr: messages.OrderResource,
               deadline: float, resumed: bool = False) -> messages.Order:
        """Answer challenges, finalize, and poll until the order is valid. On a
        ``resumed`` order, answers a crashed process left for authorizations that are
        valid by now are published again only to be cleaned up with the others."""
        presented: list[Presented] = []
        leftovers: list[Presented] = []
        try:
            for authzr in orderr.authorizations:
                if authzr.body.status == messages.STATUS_PENDING:
                    presented.append(self._present(acme, authzr))
                elif resumed and authzr.body.status == messages.STATUS_VALID:
                    leftovers.append(self._present(acme, authzr))
            for done in presented:
                done.settle(deadline)
            for done in presented:
                # Answered only once every record is in place: the CA may validate at once.
                if done.challb.status == messages.STATUS_PENDING:
                    acme.answer_challenge(done.challb, done.challb.response(acme.net.key))
            for authzr in orderr.authorizations:
                self._await_authorization(acme, authzr, deadline)
            body = self._poll_order(acme, orderr.uri, deadline, until=("ready", "valid"))
            if body.status == messages.STATUS_READY:
                try:
                    finalized = acme.begin_finalization(orderr).body
                except messages.Error as exc:
                    if exc.code != "orderNotReady":
                        raise
                else:
                    # RFC 8555 section 7.4: the answer is the order. A CA that issued at
                    # once (as Pebble does) is not asked again.
                    if finalized.status == messages.STATUS_VALID and finalized.certificate:
                        return finalized
                body = self._poll_order(acme, orderr.uri, deadline, until=("valid",))
            return body
        finally:
            for done in presented + leftovers:
                try:
                    done.cleanup()
                except Exception:  # a leftover answer is harmless and expires with the order
                    log.warning("acme.challenge.cleanup_failed",
                                extra={"challenge": self._solver.name})

    def _present(self, acme: ClientV2,
                 authzr: messages.AuthorizationResource) -> Presented:
        """Publish this issuer's kind of challenge for one authorization (stored before
        answering: the CA may validate immediately, from any replica's view)."""
        key = acme.net.key
        assert key is not None  # every client is built with the account key (``_open``)
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, self._solver.challenge_type):
                return self._solver.present(challb, authzr.body.identifier.value, key)
        raise IssuanceFailed(
            f"the CA offered no {self._solver.name} challenge for "
            f"{authzr.body.identifier.value}",
            acme_code="unsupportedChallenge", retryable=False)

    def _check_caa(self, acme: ClientV2, request: IssueRequest) -> None:
        """RFC 8659 before ordering, so a refusal is fast and names the record."""
        account = acme.net.account
        caa.check(request.dns_names, self.settings.caa_identities, self._caa_lookup,
                  account_uri=account.uri if account is not None else None,
                  method=self._solver.name)

    def _eab(self, key: jose.JWK, directory: messages.Directory) -> dict[str, Any] | None:
        """External account binding (RFC 8555 section 7.3.4) from Vault.

        :raises IssuanceFailed: when the issuer requires EAB and Vault holds none.
        """
        if not self.settings.eab:
            return None
        found = self._secrets.eab() if self._secrets is not None else None
        if not found or not found.get("kid") or not found.get("hmac_key"):
            raise IssuanceFailed(f"issuer {self.name} needs external account binding but "
                                 "Vault holds no kid and hmac_key for it",
                                 acme_code="externalAccountRequired", retryable=False)
        try:
            return messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(), kid=str(found["kid"]),
                hmac_key=str(found["hmac_key"]), directory=directory,
                hmac_alg=str(found.get("alg") or "HS256"))
        except (ValueError, TypeError) as exc:  # never echo the key itself
            raise IssuanceFailed(f"the EAB secret of issuer {self.name} in Vault is "
                                 "malformed", acme_code="externalAccountRequired",
                                 retryable=False) from exc

    def _dns_credentials(self) -> Mapping[str, Any]:
        if self._secrets is None:
            raise IssuanceFailed(f"issuer {self.name} has no secret store for dns-01",
                                 acme_code="dns", retryable=False)
        return self._secrets.dns()

    def _await_authorization(self, acme: ClientV2,
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

    def _poll_order(self, acme: ClientV2, url: str, deadline: float,
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
        if retry_after and retry_after.isascii() and retry_after.isdigit():
            wait = max(wait, min(float(retry_after), POLL_MAX * 5))
        if time.monotonic() + wait > deadline:
            raise IssuanceFailed("timed out waiting for the CA", acme_code="timeout")
        self._sleep(wait * random.uniform(0.9, 1.1))
        return min(delay * 1.3, POLL_MAX)

    def _download(self, acme: ClientV2, body: messages.Order) -> str:
        """The certificate with the chain the issuer prefers (``preferred_chain``), among
        the default and the alternates the CA links to."""
        if body.certificate is None:
            raise IssuanceFailed("the order is valid but names no certificate")
        response = self._get(acme, body.certificate)
        preferred = self.settings.preferred_chain
        if not preferred:
            return response.text
        alternates = [self._get(acme, url).text
                      for url in acme_compat.links(acme, response, "alternate")]
        return chains.select([response.text, *alternates], preferred)

    @staticmethod
    def _get(acme: ClientV2, url: str) -> requests.Response:
        """POST-as-GET (RFC 8555 section 6.3); a lost answer is asked again (``_Network``)."""
        return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])


def _offered_profiles(acme: ClientV2) -> frozenset[str]:
    """The profile names the directory advertises (``meta.profiles``, an object of name
    to description: draft-ietf-acme-profiles section 3); empty when it advertises none."""
    profiles = acme.directory.meta.profiles
    return frozenset(profiles) if isinstance(profiles, Mapping) else frozenset()


def _has_ari(acme: ClientV2) -> bool:
    try:
        return bool(acme.directory["renewalInfo"])
    except KeyError:
        return False


def _retry_after(value: str | None) -> dt.timedelta | None:
    """An HTTP ``Retry-After`` (delta-seconds or an HTTP date) as a duration from now."""
    if not value:
        return None
    digits = value.strip()
    if digits.isascii() and digits.isdigit():
        if len(digits) > 12:  # int() of thousands of digits raises; any such wait is "long"
            return MAX_RETRY_AFTER
        return min(dt.timedelta(seconds=int(digits)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(when - dt.datetime.now(dt.timezone.utc), dt.timedelta(0))


def _translate(exc: Exception, context: str) -> IssuanceFailed:
    """acme's errors -> ours. Branch on the RFC 8555 error type, never on message text."""
    if isinstance(exc, messages.Error):
        code = exc.code or "unknown"
        if code == "rateLimited":
            # RFC 8555 section 6.6: the CA "may" say when to come back; the retry is
            # never earlier (Setbacks), and the fallback decides on it.
            wait = getattr(_LAST_RETRY_AFTER, "value", None)
            return RateLimited(f"{context}: {exc.detail or code}",
                               retry_after=wait.total_seconds() if wait is not None
                               else None)
        retryable = code not in ("rejectedIdentifier", "unsupportedIdentifier", "caa",
                                 "badCSR", "unsupportedContact", "invalidContact")
        return IssuanceFailed(f"{context}: {code}: {exc.detail or ''}".strip(),
                              acme_code=code, retryable=retryable)
    if isinstance(exc, requests.RequestException):
        return IssuanceFailed(f"{context}: cannot reach the CA ({failure_reason(exc)})",
                              acme_code="connection")
    return IssuanceFailed(f"{context}: {type(exc).__name__}: {exc}"[:500])

