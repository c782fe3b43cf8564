"""The ACME server's resources (RFC 8555 section 7), one method each.

Every method takes the environment, the resource's own URL and the raw body, and returns
a ``Reply`` (or raises ``AcmeProblem``); ``api/acme.py`` only moves bytes. What an order
means in certlocker:

- ``newOrder``: every identifier must be a DNS name the account's service is granted
  (name ownership, as for a declaration); otherwise ``rejectedIdentifier`` naming each,
  before anything reaches a CA. The order is ``ready`` at once: its authorizations are
  valid (the binding proved the service; certlocker validates upstream itself).
- ``finalize``: the client's CSR must name exactly the order's names. certlocker writes
  the spec ``<env>/<service>/acme-<first name>`` with the CSR and the order (its own token;
  targets and owner an operator added are kept), and issues it through the lifecycle like
  any certificate (lease, name check again, audit, status, inventory, verification).
  The answer waits up to ``finalize_wait`` seconds; then the client polls the order.
  At most ``finalize_waiters`` finalize requests per process wait at once; the others
  answer ``processing`` (with Retry-After) at once: a waiting request holds one of the
  API's request threads, and the upstream CA's http-01 checks come to this same API, so
  every thread waiting would leave none to answer them (the orders then fail).
- ``renewalInfo`` (RFC 9773) answers from certlocker's plan for the certificate, and a
  renewal an operator asks for (or a revocation) moves the window to now.
- ``revokeCert`` goes through certlocker's revocation when the certificate is the current
  one (removal from Vault, target checks), straight to the issuer when it is an older one.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import hashlib
import math
import re
import secrets
import threading
from typing import Any, Mapping

import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import maintenance, names
from ..audit.recorder import Auditor, audited
from ..clock import Clock, rfc3339
from ..errors import CertlockerError, Conflict, InvalidInput, NotFound
from ..lifecycle import renewal_info
from ..lifecycle.name_grants import NameOwnership
from ..lifecycle.revocation import REASONS, RevocationService
from ..lifecycle.service import CertificateService
from ..maintenance import MaintenanceWindow
from ..models import (CertificateInfo, CertificateRef, CertificateSpec, CertificateStatus,
                      State)
from ..ports import Credentials, Issuer, OperatorStore, Revoker
from ..specs import SpecRules
from ..x509info import read_csr
from . import jws
from .bindings import Bindings
from .nonces import Nonces
from .problems import AcmeProblem, identifier_problem
from .records import (Account, AccountStatus, Issued, Order, OrderStatus, Records)

ORDER_LIFETIME = dt.timedelta(days=7)
ARI_RETRY_AFTER = 3600
PROCESSING_RETRY_AFTER = 2
ABANDONED_AFTER = 60  # seconds past the finalize wait
MAX_IDENTIFIERS = names.MAX_DNS_NAMES
_CONTACT = re.compile(r"^mailto:[^@\s,;]+@[^@\s,;]+$")


@dataclasses.dataclass(frozen=True)
class Reply:
    """An answer: a JSON object (``body``), a PEM chain (``text``) or nothing."""

    status: int
    body: Mapping[str, Any] | None = None
    text: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    content_type: str = "application/json"


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    public_url: str
    environments: tuple[str, ...]
    issuer: str
    challenge: str  # the issuer's challenge type: wildcards need dns-01
    finalize_wait: float = 30.0
    #: finalize requests per process that wait for their issuance (the others answer
    #: ``processing`` at once); below gunicorn's threads per worker (8 in the dev stack)
    finalize_waiters: int = 6


class AcmeServer:
    def __init__(self, store: OperatorStore, options: ServerOptions, *, rules: SpecRules,
                 certificates: CertificateService, ownership: NameOwnership,
                 revocation: RevocationService, issuers: Mapping[str, Issuer],
                 credentials: Credentials, bindings: Bindings, nonces: Nonces,
                 audit: Auditor, clock: Clock, side: cf.Executor | None = None) -> None:
        self._store = store
        self._options = options
        self._rules = rules
        self._certificates = certificates
        self._ownership = ownership
        self._revocation = revocation
        self._issuers = issuers
        self._credentials = credentials
        self._bindings = bindings
        self._nonces = nonces
        self._records = Records(store)
        self._audit = audit
        self._clock = clock
        self._side = side
        self._waiters = threading.BoundedSemaphore(max(1, options.finalize_waiters))

    # -- URLs --------------------------------------------------------------------------------
    def base(self, env: str) -> str:
        return f"{self._options.public_url.rstrip('/')}/acme/{env}"

    def directory_url(self, env: str) -> str:
        return self.base(env) + "/directory"

    def check_environment(self, env: str) -> str:
        if env not in self._options.environments:
            raise AcmeProblem("malformed", f"no ACME directory for environment "
                                           f"{env[:64]!r}", status=404)
        return env

    def nonce(self) -> str:
        return self._nonces.new()

    # -- directory and nonces ------------------------------------------------------------------
    def directory(self, env: str) -> Reply:
        base = self.base(self.check_environment(env))
        return Reply(200, {
            "newNonce": base + "/new-nonce", "newAccount": base + "/new-account",
            "newOrder": base + "/new-order", "revokeCert": base + "/revoke-cert",
            "keyChange": base + "/key-change", "renewalInfo": base + "/renewal-info",
            "meta": {"externalAccountRequired": True,
                     "website": self._options.public_url.rstrip("/") + "/docs/acme"},
        })

    # -- bindings (operators, through the API) ----------------------------------------------
    def create_binding(self, env: str, service: str, actor: str) -> dict[str, Any]:
        """A new External Account Binding for the service (the caller was authorized
        to mint its credentials): the HMAC key is in this answer and nowhere else."""
        binding, key = self._bindings.create(env, service,
                                             self._credentials.generation(env, service),
                                             actor, self._clock.now())
        audited(self._audit, actor, "acme.binding.create", f"service:{env}/{service}",
                "success", details={"eab_kid": binding.kid,
                                    "generation": binding.generation})
        return {"directory_url": self.directory_url(env), "eab_kid": binding.kid,
                "eab_hmac_key": key, "environment": env, "service": service,
                "created_at": rfc3339(binding.created_at)}

    # -- accounts ------------------------------------------------------------------------------
    def new_account(self, env: str, url: str, body: bytes) -> Reply:
        self.check_environment(env)
        signed = jws.verify(body, url, by_account=None)
        self._nonces.redeem(signed.nonce)
        payload = signed.json()
        thumb = jws.thumbprint(signed.key)
        existing = self._records.account_by_key(thumb)
        if existing is not None and existing.environment == env:
            return self._account_reply(existing, 200)
        if existing is not None:
            raise AcmeProblem("unauthorized", "this key belongs to an account of another "
                                              "environment; use a new key")
        if payload.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account has this key")
        eab = payload.get("externalAccountBinding")
        if eab is None:
            raise AcmeProblem("externalAccountRequired", "this server requires an External "
                              "Account Binding: create one with `certlocker acme-account "
                              f"{env} <service>`")
        binding = self._bindings.verify(eab, signed.key, url)
        if binding.environment != env:
            raise AcmeProblem("unauthorized", "this eab_kid belongs to another environment")
        generation = self._credentials.generation(env, binding.service)
        if binding.generation != generation:
            audited(self._audit, f"acme-eab:{binding.kid}", "acme.account.create",
                    f"service:{env}/{binding.service}", "denied",
                    reason="the service's credentials were revoked after this binding")
            raise AcmeProblem("unauthorized", "this binding was revoked with the service's "
                                              "credentials; create a new one")
        account = self._records.create_account(Account(
            id=secrets.token_hex(16), environment=env, service=binding.service,
            key=jws.key_json(signed.key), thumbprint=thumb, eab_kid=binding.kid,
            generation=generation, created_at=self._clock.now(),
            contact=_contact(payload.get("contact"))))
        audited(self._audit, f"acme-eab:{binding.kid}", "acme.account.create",
                f"service:{env}/{binding.service}", "success",
                details={"account": account.id, "key_thumbprint": thumb,
                         "binding_created_by": binding.created_by})
        return self._account_reply(account, 201)

    def account(self, env: str, url: str, body: bytes, account_id: str) -> Reply:
        signed, account, version = self._authenticated(env, url, body, allow_inactive=True)
        if account.id != account_id:
            raise AcmeProblem("unauthorized", "this is another account")
        if signed.post_as_get:
            return self._account_reply(account, 200)
        payload = signed.json()
        if account.status is not AccountStatus.VALID:
            raise AcmeProblem("unauthorized", "the account is deactivated")
        changed = account
        if "contact" in payload:
            changed = dataclasses.replace(changed, contact=_contact(payload["contact"]))
        if payload.get("status") is not None:
            if payload["status"] != "deactivated":
                raise AcmeProblem("malformed", "status may only be set to deactivated")
            changed = dataclasses.replace(changed, status=AccountStatus.DEACTIVATED)
        if changed != account:
            self._records.save_account(changed, version)
            audited(self._audit, self._actor(changed), "acme.account.update",
                    f"service:{env}/{changed.service}", "success",
                    details={"account": changed.id, "status": changed.status.value})
        return self._account_reply(changed, 200)

    def account_orders(self, env: str, url: str, body: bytes, account_id: str) -> Reply:
        signed, account, _ = self._authenticated(env, url, body)
        if account.id != account_id:
            raise AcmeProblem("unauthorized", "this is another account")
        _post_as_get(signed)
        return Reply(200, {"orders": [self._order_url(env, account.id, o) for o in
                                      self._records.order_ids(env, account.id)[:1000]]})

    def key_change(self, env: str, url: str, body: bytes) -> Reply:
        signed, account, version = self._authenticated(env, url, body)
        inner = jws.verify_inner(signed.json(), url)
        payload = inner.json()
        if payload.get("account") != self._account_url(env, account.id):
            raise AcmeProblem("malformed", "the inner payload's account is not the signer")
        try:
            old = jws.key_from_json(payload.get("oldKey"))
        except AcmeProblem:
            raise AcmeProblem("malformed", "oldKey is not a JWK") from None
        if jws.thumbprint(old) != account.thumbprint:
            raise AcmeProblem("malformed", "oldKey is not the account's current key")
        new_thumb = jws.thumbprint(inner.key)
        other = self._records.account_by_key(new_thumb)
        if other is not None:
            raise AcmeProblem("malformed", "the new key belongs to an account already",
                              status=409, headers={"Location": self._account_url(
                                  other.environment, other.id)})
        moved = dataclasses.replace(account, key=jws.key_json(inner.key), thumbprint=new_thumb)
        try:
            self._records.move_key(moved, account.thumbprint)
        except Conflict:
            raise AcmeProblem("malformed", "the new key belongs to an account already",
                              status=409) from None
        self._records.save_account(moved, version)
        audited(self._audit, self._actor(account), "acme.account.key-change",
                f"service:{env}/{account.service}", "success",
                details={"account": account.id, "old_thumbprint": account.thumbprint,
                         "new_thumbprint": new_thumb})
        return self._account_reply(moved, 200)

    # -- orders --------------------------------------------------------------------------------
    def new_order(self, env: str, url: str, body: bytes) -> Reply:
        signed, account, _ = self._authenticated(env, url, body)
        payload = signed.json()
        for field in ("notBefore", "notAfter"):
            if payload.get(field) is not None:
                raise AcmeProblem("malformed", f"{field} is not supported: the issuer "
                                               "decides the validity period")
        if payload.get("profile") is not None:
            raise AcmeProblem("malformed", "this server offers no certificate profiles")
        dns = self._identifiers(payload.get("identifiers"))
        replaces = payload.get("replaces")
        if replaces is not None and (not isinstance(replaces, str) or len(replaces) > 512):
            raise AcmeProblem("malformed", "replaces must be an ARI certificate id")
        spec = self._spec_for(account, dns)
        refused = self._ownership.refused(spec)
        if refused:
            audited(self._audit, self._actor(account), "acme.order.create", spec.ref.id,
                    "denied", reason="; ".join(f"{r.name}: {r.reason}" for r in refused)[:500],
                    details={"account": account.id, "dns_names": list(dns)})
            raise AcmeProblem("rejectedIdentifier", f"service {account.service} may not "
                              f"carry {', '.join(r.name for r in refused)}", extra={
                                  "subproblems": [identifier_problem(
                                      "rejectedIdentifier", r.name,
                                      f"{r.name}: {r.reason}") for r in refused]})
        now = self._clock.now()
        order = Order(id=secrets.token_hex(16), account=account.id, environment=env,
                      service=account.service, certificate=spec.ref.name, dns_names=dns,
                      created_at=now, expires=now + ORDER_LIFETIME, replaces=replaces)
        self._records.save_order(order, 0)
        audited(self._audit, self._actor(account), "acme.order.create", spec.ref.id,
                "success", details={"account": account.id, "order": order.id,
                                    "dns_names": list(dns), "replaces": replaces})
        return Reply(201, self._order_json(order),
                     headers={"Location": self._order_url(env, account.id, order.id)})

    def order(self, env: str, url: str, body: bytes, account_id: str, order_id: str) -> Reply:
        signed, account, _ = self._authenticated(env, url, body)
        _post_as_get(signed)
        order, version = self._own_order(env, account, account_id, order_id)
        return self._order_reply(*self._settle(order, version))

    def authorization(self, env: str, url: str, body: bytes, account_id: str,
                      order_id: str, index: int) -> Reply:
        signed, account, _ = self._authenticated(env, url, body)
        order, version = self._own_order(env, account, account_id, order_id)
        if not signed.post_as_get:
            # RFC 8555 section 7.5.2: a client may deactivate an authorization (Caddy does
            # when an order fails); an order not yet finalized cannot be used after that.
            if signed.json().get("status") != "deactivated":
                raise AcmeProblem("malformed", "an authorization can only be deactivated")
            self._authz_json(order, index)
            if index not in order.deactivated:
                order = order.replace(deactivated=tuple(sorted({*order.deactivated, index})),
                                      status=OrderStatus.INVALID if order.status is
                                      OrderStatus.READY else order.status)
                self._records.save_order(order, version)
        return Reply(200, self._authz_json(order, index))

    def challenge(self, env: str, url: str, body: bytes, account_id: str, order_id: str,
                  index: int) -> Reply:
        """Answering (``{}``) or reading a challenge: it is valid already."""
        _, account, _ = self._authenticated(env, url, body)
        order, _ = self._own_order(env, account, account_id, order_id)
        authz = self._authz_json(order, index)
        return Reply(200, authz["challenges"][0], headers={"Link": '<{}>;rel="up"'.format(
            self._authz_url(order, index))})

    def finalize(self, env: str, url: str, body: bytes, account_id: str,
                 order_id: str) -> Reply:
        signed, account, _ = self._authenticated(env, url, body)
        order, version = self._own_order(env, account, account_id, order_id)
        payload = signed.json()
        if order.status is not OrderStatus.READY:
            if order.status is OrderStatus.PROCESSING:
                return self._order_reply(*self._settle(order, version))
            raise AcmeProblem("orderNotReady", f"the order is {order.status.value}")
        if order.expires <= self._clock.now():
            raise AcmeProblem("orderNotReady", "the order has expired; place a new one")
        csr_pem = _csr_pem(payload.get("csr"))
        try:
            facts = read_csr(csr_pem)
        except ValueError as exc:
            raise AcmeProblem("badCSR", str(exc)) from None
        if set(facts.dns_names) != set(order.dns_names):
            raise AcmeProblem("badCSR", f"the CSR names {', '.join(facts.dns_names)}; the "
                                        f"order is for {', '.join(order.dns_names)}")
        spec = dataclasses.replace(self._spec_for(account, order.dns_names),
                                   key_type=facts.key_type, csr=csr_pem,
                                   acme_order=order.id)
        order = order.replace(status=OrderStatus.PROCESSING, finalized_at=self._clock.now())
        version = self._records.save_order(order, version)
        try:
            future = self._certificates.record_client_order(spec, self._rules,
                                                            actor=self._actor(account))
        except InvalidInput as exc:  # the spec the CSR makes is not a valid spec
            order = order.replace(status=OrderStatus.INVALID, error=AcmeProblem(
                "badCSR", exc.detail).document())
            self._records.save_order(order, version)
            raise AcmeProblem("badCSR", exc.detail) from None
        except CertlockerError as exc:  # Vault refused or is away: the order ends here
            order = order.replace(status=OrderStatus.INVALID, error=AcmeProblem(
                "serverInternal", f"the order could not be recorded: {exc.detail}"[:500],
                status=503).document())
            self._records.save_order(order, version)
            raise AcmeProblem("serverInternal", f"the order could not be recorded: "
                              f"{exc.detail}"[:500], status=503) from None
        audited(self._audit, self._actor(account), "acme.order.finalize", spec.ref.id,
                "success", details={"account": account.id, "order": order.id,
                                    "dns_names": list(order.dns_names),
                                    "key_type": facts.key_type.value,
                                    "csr_sha256": hashlib.sha256(csr_pem.encode()).hexdigest()})
        seen = None
        if self._waiters.acquire(blocking=False):
            try:
                seen = self._certificates.wait_settled(
                    spec.ref, future, lambda status: _answered(order, status),
                    self._options.finalize_wait)
            finally:
                self._waiters.release()
        if seen is None or not _answered(order, seen):
            return self._order_reply(order, seen)  # the client polls the order
        return self._order_reply(*self._settle(order, version, seen))

    def certificate(self, env: str, url: str, body: bytes, account_id: str,
                    order_id: str) -> Reply:
        signed, account, _ = self._authenticated(env, url, body)
        _post_as_get(signed)
        order, _ = self._own_order(env, account, account_id, order_id)
        if order.status is not OrderStatus.VALID or not order.fullchain:
            raise AcmeProblem("malformed", "the order has no certificate", status=404)
        return Reply(200, text=order.fullchain, content_type="application/pem-certificate-chain")

    # -- revocation ------------------------------------------------------------------------------
    def revoke_cert(self, env: str, url: str, body: bytes) -> Reply:
        self.check_environment(env)
        signed = jws.verify(body, url, by_account=lambda kid: self._key_of(env, kid))
        self._nonces.redeem(signed.nonce)
        payload = signed.json()
        pem, cert = _certificate(payload.get("certificate"))
        reason = _reason(payload.get("reason"))
        serial = format(cert.serial_number, "x")
        issued = self._records.issued(serial)
        if issued is None or issued.environment != env:
            raise AcmeProblem("malformed", "this server did not issue that certificate",
                              status=404)
        actor = self._revoker_actor(env, signed, issued, cert)
        status = self._store.read_status(issued.ref)
        current = status[0] if status else None
        if current is not None and current.revocation is not None and \
                current.revocation.serial == serial:
            raise AcmeProblem("alreadyRevoked", "the certificate is revoked already")
        if current is not None and current.current is not None and \
                current.current.serial == serial and current.state is not State.RETIRED:
            try:
                self._revocation.revoke(None, issued.ref, reason, replace=False,
                                        actor=actor)
            except CertlockerError as exc:
                raise AcmeProblem("serverInternal", f"revocation failed: {exc.detail}",
                                  status=exc.status if exc.status >= 500 else 503) from None
        else:
            self._revoke_old(issued, pem, reason, actor)
        return Reply(200, None)

    def _revoke_old(self, issued: Issued, pem: str, reason: str, actor: str) -> None:
        """A certificate that is no longer the current one of its record: revoked at the
        issuer that made it, and recorded in the audit trail."""
        found = self._store.read_spec(issued.ref)
        issuer = self._issuers.get(found[0].issuer if found else self._options.issuer)
        if issuer is None or not isinstance(issuer, Revoker):
            raise AcmeProblem("serverInternal", "the issuer of this certificate cannot "
                                                "revoke", status=503)
        try:
            issuer.revoke(pem, REASONS[reason])
        except CertlockerError as exc:
            audited(self._audit, actor, "certificate.revoke", issued.ref.id, "failure",
                    reason=exc.detail[:500], details={"serial": issued.serial})
            raise AcmeProblem("serverInternal", f"revocation failed: {exc.detail}",
                              status=503) from None
        audited(self._audit, actor, "certificate.revoke", issued.ref.id, "success",
                details={"serial": issued.serial, "reason": reason, "current": False})

    def _revoker_actor(self, env: str, signed: jws.Signed, issued: Issued,
                       cert: x509.Certificate) -> str:
        """Who asks: an account of the certificate's service, or whoever holds the
        certificate's key (RFC 8555 section 7.6).

        :raises AcmeProblem: unauthorized for anyone else."""
        if signed.kid is not None:
            account = self._account_for_kid(env, signed.kid)
            self._check_live(env, account)
            if account.service != issued.service:
                raise AcmeProblem("unauthorized", "this account's service does not own the "
                                                  "certificate")
            return self._actor(account)
        try:
            matches = jws.thumbprint(jose.JWK.load(cert.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
            ))) == jws.thumbprint(signed.key)
        except (ValueError, TypeError, jose.Error):
            matches = False
        if not matches:
            raise AcmeProblem("unauthorized", "the request is signed neither by an account "
                                              "of the service nor by the certificate's key")
        return f"acme-certificate-key:{issued.ref.id}"

    # -- renewal information (RFC 9773) --------------------------------------------------------
    def renewal_info(self, env: str, cert_id: str) -> Reply:
        self.check_environment(env)
        serial = _serial_of(cert_id)
        issued = self._records.issued(serial) if serial else None
        if issued is None or issued.environment != env:
            raise AcmeProblem("malformed", "this server did not issue that certificate",
                              status=404)
        start, end = self._window(issued, self._clock.now())
        return Reply(200, {"suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}},
                     headers={"Retry-After": str(ARI_RETRY_AFTER)})

    def _window(self, issued: Issued, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """certlocker's renewal plan for the certificate, or now when it must go now (an
        operator's renewal request after it was issued, or its revocation); a renewal
        inside the certificate's maintenance window (``_within``)."""
        found_status = self._store.read_status(issued.ref)
        found_spec = self._store.read_spec(issued.ref)
        status = found_status[0] if found_status else None
        spec = found_spec[0] if found_spec else None
        window = spec.window if spec is not None else None
        if status is not None:
            revoked = status.revocation is not None and status.revocation.serial == issued.serial
            request = status.renewal_request
            if revoked or status.state is State.RETIRED:
                return now - dt.timedelta(minutes=1), now
            if request is not None and request.at > issued.not_before:
                return _within(window, request.at - dt.timedelta(minutes=1), request.at,
                               issued.not_after, request.at)
        is_current = (status is not None and status.current is not None
                      and status.current.serial == issued.serial)
        info = status.current if is_current and status is not None and status.current \
            else CertificateInfo(serial=issued.serial, not_before=issued.not_before,
                                 not_after=issued.not_after, sha256_fingerprint="",
                                 issuer="")
        try:
            at = renewal_info.plan(info, spec.renew_before if spec else None,
                                   status if is_current else None, now).at
        except InvalidInput:
            at = renewal_info.plan(info, None, None, now).at
        lifetime = issued.not_after - issued.not_before
        end = min(at + max(lifetime / 20, dt.timedelta(minutes=1)), issued.not_after)
        return _within(window, at, max(end, at + dt.timedelta(seconds=1)), issued.not_after,
                       at)

    # -- internals ----------------------------------------------------------------------------
    def _authenticated(self, env: str, url: str, body: bytes, *,
                       allow_inactive: bool = False) -> tuple[jws.Signed, Account, int]:
        """A request signed by an account (``kid``) of this environment, whose service's
        credentials were not revoked since, with a fresh nonce.

        :raises AcmeProblem: as ``jws.verify``, badNonce, accountDoesNotExist,
            unauthorized."""
        self.check_environment(env)
        found: dict[str, tuple[Account, int]] = {}

        def key_of(kid: str) -> jose.JWK:
            account, version = self._account_and_version(env, kid)
            found["account"] = (account, version)
            return jws.key_from_json(account.key)

        signed = jws.verify(body, url, by_account=key_of)
        account, version = found["account"]
        # The service's generation is read while the nonce is redeemed: one round trip.
        generation = (self._side.submit(self._credentials.generation, env, account.service)
                      if self._side is not None else None)
        self._nonces.redeem(signed.nonce)
        self._check_live(env, account, generation, allow_inactive=allow_inactive)
        return signed, account, version

    def _check_live(self, env: str, account: Account,
                    generation: cf.Future[int] | None = None, *,
                    allow_inactive: bool = False) -> None:
        """The account may act: not deactivated (unless ``allow_inactive``), and its
        service's credentials not revoked since it was made (``generation``: that read,
        already under way).

        :raises AcmeProblem: unauthorized."""
        if account.status is not AccountStatus.VALID and not allow_inactive:
            raise AcmeProblem("unauthorized", "the account is deactivated")
        current = (generation.result() if generation is not None
                   else self._credentials.generation(env, account.service))
        if current != account.generation:
            raise AcmeProblem("unauthorized", f"the credentials of service "
                                              f"{env}/{account.service} were revoked: this "
                                              "account is stopped; create a new binding")

    def _account_and_version(self, env: str, kid: str) -> tuple[Account, int]:
        prefix = self.base(env) + "/account/"
        account_id = kid[len(prefix):] if kid.startswith(prefix) else ""
        try:
            account, version = self._records.account(env, account_id)
        except NotFound:
            account = None
        if account is None:
            raise AcmeProblem("accountDoesNotExist", "no such account")
        return account, version

    def _account_for_kid(self, env: str, kid: str) -> Account:
        return self._account_and_version(env, kid)[0]

    def _key_of(self, env: str, kid: str) -> jose.JWK:
        return jws.key_from_json(self._account_for_kid(env, kid).key)

    def _own_order(self, env: str, account: Account, account_id: str,
                   order_id: str) -> tuple[Order, int]:
        if account_id != account.id:
            raise AcmeProblem("unauthorized", "this order belongs to another account")
        try:
            order, version = self._records.order(env, account.id, order_id)
        except NotFound:
            order = None
        if order is None:
            raise AcmeProblem("malformed", "no such order", status=404)
        return order, version

    def _identifiers(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or len(value) > MAX_IDENTIFIERS:
            raise AcmeProblem("malformed", f"identifiers must list 1 to {MAX_IDENTIFIERS} "
                                           "identifiers")
        values = []
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                raise AcmeProblem("malformed", "each identifier is {type, value}")
            if item.get("type") != "dns":
                raise AcmeProblem("unsupportedIdentifier", f"identifier type "
                                  f"{str(item.get('type'))[:20]!r} is not supported; use dns",
                                  extra={"subproblems": [identifier_problem(
                                      "unsupportedIdentifier", str(item["value"])[:253],
                                      "only dns identifiers")]})
            values.append(item["value"])
        try:
            dns = names.dns_names("identifiers", values,
                                  allow_wildcard=self._options.challenge == "dns-01")
        except InvalidInput as exc:
            raise AcmeProblem("rejectedIdentifier", exc.detail) from None
        return dns

    def _spec_for(self, account: Account, dns: tuple[str, ...]) -> CertificateSpec:
        return CertificateSpec(ref=CertificateRef(account.environment, account.service,
                                                  certificate_name(dns)),
                               dns_names=dns, issuer=self._options.issuer)

    def _settle(self, order: Order, version: int, status: CertificateStatus | None = None,
                ) -> tuple[Order, CertificateStatus | None]:
        """A processing order brought up to date with its certificate's status (read
        unless given), and that status."""
        if order.status is not OrderStatus.PROCESSING:
            return order, status
        if status is None:
            found = self._store.read_status(order.ref)
            status = found[0] if found else None
        settled = _settled(order, status) or self._abandoned(order)
        if settled is None:
            return order, status
        if settled.status is OrderStatus.VALID and settled.serial and status and \
                status.current:
            self._records.file_serial(Issued(
                serial=settled.serial, environment=order.environment, service=order.service,
                certificate=order.certificate, account=order.account, order=order.id,
                not_before=status.current.not_before, not_after=status.current.not_after))
        try:
            self._records.save_order(settled, version)
        except Conflict:
            pass  # another poller settled it the same way
        return settled, status

    def _abandoned(self, order: Order) -> Order | None:
        """A processing order its certificate's spec no longer names, long after its
        finalize: the process died before recording it, or a newer order of the same
        names took its place. It ends invalid (the client's key is with the client; a new
        order starts over); None while it may still be answered."""
        if order.finalized_at is None or self._clock.now() - order.finalized_at < \
                dt.timedelta(seconds=self._options.finalize_wait + ABANDONED_AFTER):
            return None
        found = self._store.read_spec(order.ref)
        if found is not None and found[0].acme_order == order.id:
            return None  # recorded: the lifecycle (or its retries) answers it
        return order.replace(status=OrderStatus.INVALID, error=AcmeProblem(
            "serverInternal", "the order was interrupted or replaced by a newer order for "
            "the same names; place a new order").document())

    def _actor(self, account: Account) -> str:
        return f"acme:{account.environment}/{account.service}/{account.id[:12]}"

    # -- rendering ---------------------------------------------------------------------------
    def _account_url(self, env: str, account_id: str) -> str:
        return f"{self.base(env)}/account/{account_id}"

    def _order_url(self, env: str, account_id: str, order_id: str) -> str:
        return f"{self.base(env)}/order/{account_id}/{order_id}"

    def _authz_url(self, order: Order, index: int) -> str:
        return f"{self.base(order.environment)}/authz/{order.account}/{order.id}/{index}"

    def _account_reply(self, account: Account, status: int) -> Reply:
        url = self._account_url(account.environment, account.id)
        return Reply(status, {"status": account.status.value, "contact": list(account.contact),
                              "orders": url + "/orders", "termsOfServiceAgreed": True},
                     headers={"Location": url})

    def _order_json(self, order: Order) -> dict[str, Any]:
        base = self.base(order.environment)
        document: dict[str, Any] = {
            "status": order.status.value, "expires": rfc3339(order.expires),
            "identifiers": [{"type": "dns", "value": n} for n in order.dns_names],
            "authorizations": [self._authz_url(order, i) for i in range(len(order.dns_names))],
            "finalize": f"{base}/finalize/{order.account}/{order.id}",
        }
        if order.replaces:
            document["replaces"] = order.replaces
        if order.status is OrderStatus.VALID:
            document["certificate"] = f"{base}/cert/{order.account}/{order.id}"
        if order.error:
            document["error"] = order.error
        return document

    def _order_reply(self, order: Order, status: CertificateStatus | None = None) -> Reply:
        headers = {"Location": self._order_url(order.environment, order.account, order.id)}
        if order.status is OrderStatus.PROCESSING:
            headers["Retry-After"] = str(_retry_after(status, self._clock.now()))
        return Reply(200, self._order_json(order), headers=headers)

    def _authz_json(self, order: Order, index: int) -> dict[str, Any]:
        if not 0 <= index < len(order.dns_names):
            raise AcmeProblem("malformed", "no such authorization", status=404)
        name = order.dns_names[index]
        wildcard = name.startswith("*.")
        token = hashlib.sha256(f"{order.id}:{index}".encode()).hexdigest()[:43]
        document: dict[str, Any] = {
            "identifier": {"type": "dns", "value": name[2:] if wildcard else name},
            "status": "deactivated" if index in order.deactivated else "valid",
            "expires": rfc3339(order.expires),
            "challenges": [{"type": "dns-01" if wildcard else "http-01",
                            "url": f"{self.base(order.environment)}/chall/{order.account}/"
                                   f"{order.id}/{index}",
                            "status": "valid", "token": token,
                            "validated": rfc3339(order.created_at)}],
        }
        if wildcard:
            document["wildcard"] = True
        return document


def certificate_name(dns: tuple[str, ...]) -> str:
    """The certificate an order's names go to under its service: ``acme-`` and the first
    name, made a valid name component (long names end in a short digest)."""
    first = dns[0].lower()
    slug = re.sub(r"[^a-z0-9-]+", "-", first.replace("*.", "wildcard.")).strip("-")
    name = f"acme-{slug}"
    if len(name) > 63:
        name = name[:50].rstrip("-") + "-" + hashlib.sha256(first.encode()).hexdigest()[:12]
    return name


def _settled(order: Order, status: CertificateStatus | None) -> Order | None:
    """The order as the certificate's status answers it; None while it is still open."""
    current = status.current if status else None
    if current is not None and current.acme_order == order.id and current.leaf_pem:
        return order.replace(status=OrderStatus.VALID, serial=current.serial,
                             fullchain=current.leaf_pem + (current.chain_pem or ""))
    if status is not None and (status.failed_acme_order == order.id or (
            order.finalized_at is not None
            and status.state in (State.FAILED, State.REFUSED, State.INVALID)
            and status.updated_at is not None and status.updated_at >= order.finalized_at)):
        code = "rejectedIdentifier" if status.state is State.REFUSED else "serverInternal"
        return order.replace(status=OrderStatus.INVALID, error=AcmeProblem(
            code, f"issuance failed: {status.last_error or status.state.value}"[:1000],
            status=403 if code == "rejectedIdentifier" else 500).document())
    return None


def _within(window: MaintenanceWindow | None, start: dt.datetime, end: dt.datetime,
            not_after: dt.datetime, renewal_at: dt.datetime,
            ) -> tuple[dt.datetime, dt.datetime]:
    """The suggested window ``start``-``end`` moved into the maintenance window, as
    certlocker's own rotations are (``maintenance.hold``): to its next opening when the
    renewal would be held, cut at the opening's end when it starts inside one, and left
    as it is with no window or when waiting would leave too little validity (the
    override)."""
    if window is None:
        return start, end
    held = maintenance.hold(window, start, not_after, renewal_at)
    if held.wait and held.until is not None:
        start, end = held.until, held.until + (end - start)
    opening = window.opening(start)
    if opening is not None:
        end = min(end, opening[1])
    return start, max(end, start + dt.timedelta(seconds=1))


def _retry_after(status: CertificateStatus | None, now: dt.datetime) -> int:
    """Seconds a client polling a processing order should wait: until the slot an
    issuer's rate limits gave the issuance (``status.waiting``), else a short poll."""
    at = status.next_attempt_at if status is not None and status.waiting else None
    if at is None or at <= now:
        return PROCESSING_RETRY_AFTER
    return max(PROCESSING_RETRY_AFTER, math.ceil((at - now).total_seconds()))


def _answered(order: Order, status: CertificateStatus) -> bool:
    return _settled(order, status) is not None


def _post_as_get(signed: jws.Signed) -> None:
    if not signed.post_as_get:
        raise AcmeProblem("malformed", "this resource is read with POST-as-GET (an empty "
                                       "payload)")


def _contact(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 4:
        raise AcmeProblem("invalidContact", "contact must list at most 4 mailto: URLs")
    for item in value:
        if not isinstance(item, str):
            raise AcmeProblem("invalidContact", "each contact is a mailto: URL")
        if not item.startswith("mailto:"):
            raise AcmeProblem("unsupportedContact", "only mailto: contacts are supported")
        if len(item) > 254 or not _CONTACT.match(item):
            raise AcmeProblem("invalidContact", f"{item[:64]!r} is not a valid mailto: URL")
    return tuple(value)


def _csr_pem(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise AcmeProblem("malformed", "csr must be the base64url DER of a CSR")
    try:
        der = jose.decode_b64jose(value)
        csr = x509.load_der_x509_csr(der)
    except (jose.DeserializationError, ValueError):
        raise AcmeProblem("badCSR", "csr is not the base64url DER of a PKCS#10 request") \
            from None
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _certificate(value: Any) -> tuple[str, x509.Certificate]:
    if not isinstance(value, str) or not value:
        raise AcmeProblem("malformed", "certificate must be base64url DER")
    try:
        cert = x509.load_der_x509_certificate(jose.decode_b64jose(value))
    except (jose.DeserializationError, ValueError):
        raise AcmeProblem("malformed", "certificate is not base64url DER of a certificate") \
            from None
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert


def _reason(value: Any) -> str:
    """An RFC 5280 reason code -> certlocker's reason name."""
    if value is None:
        return "unspecified"
    by_code = {code: name for name, code in REASONS.items()}
    if isinstance(value, bool) or not isinstance(value, int) or value not in by_code:
        raise AcmeProblem("badRevocationReason", f"reason must be one of "
                          f"{sorted(by_code)}")
    return by_code[value]


def _serial_of(cert_id: str) -> str | None:
    """The serial (hex) of an RFC 9773 certificate id ``<AKI b64url>.<serial b64url>``."""
    parts = cert_id.split(".")
    if len(parts) != 2 or not parts[1] or len(cert_id) > 512:
        return None
    try:
        raw = jose.decode_b64jose(parts[1])
    except jose.DeserializationError:
        return None
    return format(int.from_bytes(raw, "big"), "x") if raw else None

