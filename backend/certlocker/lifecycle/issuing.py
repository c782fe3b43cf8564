"""Issuance under the certificate's lease: one holder at a time, decided again under the
lease, the key journaled before the CA sees it, and the certificate stored before the
status says so.

Uses certlocker's own store (operators never write certificates or status directly).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import Any, Callable, Mapping

from ..audit.recorder import Auditor, audited
from ..clock import Clock
from ..errors import CertlockerError, IssuanceFailed, NamesRefused, NotFound
from ..models import (CertificateInfo, CertificateRef, CertificateSpec, CertificateStatus,
                     IssueRequest, IssuedCertificate, RenewalRequest, State)
from ..ownership import summary
from ..ports import Issuer
from ..x509info import first_fingerprint
from . import renewal_info
from .records.expiry_index import ExpiryIndex
from .name_grants import NameOwnership
from .observe import IssuanceObserver
from .ports import Store
from .setbacks import Setbacks
from .records.status_writes import update_status
from .records.vault_adapters import StoreJournal, StoreLease

log = logging.getLogger(__name__)

HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

Decide = Callable[[CertificateSpec, CertificateStatus | None], bool]
#: The spec and the status (with their versions) as read under the lease.
Known = tuple[tuple[CertificateSpec, int], tuple[CertificateStatus, int] | None]
FileHint = Callable[[CertificateSpec, CertificateStatus], CertificateStatus]


class Issuance:
    """``CertificateService.issue``: the lease, the decision under it, the order, and
    the writes that follow a certificate (store, journal cleared, status, side records)."""

    def __init__(self, store: Store, issuers: Mapping[str, Issuer], *,
                 ownership: NameOwnership, clock: Clock, observer: IssuanceObserver,
                 audit: Auditor, actor: str, lease_ttl: float, side: cf.Executor,
                 expiry: ExpiryIndex, setbacks: Setbacks, file_hint: FileHint) -> None:
        self._store = store
        self.issuers = issuers
        self._ownership = ownership
        self._clock = clock
        self._observer = observer
        self._audit = audit
        self._actor = actor
        self._lease_ttl = lease_ttl
        self._side = side
        self._expiry = expiry
        self._setbacks = setbacks
        self._hint = file_hint

    def issue(self, ref: CertificateRef, decide: Decide | None = None, *,
              first_lease: bool = False) -> CertificateStatus:
        """See ``CertificateService.issue``.

        :raises NotFound: when the spec is gone."""
        # One holder per call: two threads of one process must not share a lease.
        lease = StoreLease(self._store, ref, f"{HOLDER}:{uuid.uuid4().hex[:8]}")
        if not lease.acquire(time.time(), self._lease_ttl, probably_first=first_lease):
            current = self._store.read_status(ref)
            return current[0] if current else CertificateStatus(state=State.ISSUING)
        known: Known | None = None
        if decide is not None and not lease.first:  # a first lease: nothing was issued
            try:
                skip, known = self._still_needed(ref, decide)
            except BaseException:
                lease.release()
                raise
            if skip is not None:
                # Nothing to issue: a key journaled by an attempt that died is an orphan.
                try:
                    StoreJournal(self._store, ref).clear()
                finally:
                    lease.release()
                return skip
        started = time.monotonic()
        ok = False
        try:
            result = self._issue_locked(ref, first=lease.first, known=known)
            ok = result.last_error is None
            return result
        finally:
            lease.release()
            log.info("issuance.finished", extra={
                "certificate": ref.id, "seconds": round(time.monotonic() - started, 3)})
            self._observer.issuance_finished(ref, time.monotonic() - started, ok)

    def _still_needed(self, ref: CertificateRef, decide: Decide,
                      ) -> tuple[CertificateStatus | None, Known]:
        """None when ``decide`` still wants an issuance, else the status to return; with
        the spec and status read under the lease (the issuance goes on from them)."""
        found = self._store.read_spec(ref)
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        current = self._store.read_status(ref)
        status = current[0] if current else None
        if decide(found[0], status):
            return None, (found, current)
        return status or CertificateStatus(state=State.PENDING), (found, current)

    def _issue_locked(self, ref: CertificateRef, *, first: bool = False,
                      known: Known | None = None) -> CertificateStatus:
        """``known``: the spec and status just read under this lease, if any."""
        found = known[0] if known is not None else self._store.read_spec(ref)
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        spec = found[0]
        if spec.problem is not None:
            return self._setbacks.mark_invalid(spec)
        issuer, refusal = self._issuer_for(spec)
        if refusal is not None:
            return self._hint(spec, self._setbacks.fail(ref, refusal,
                                                        acme_order=spec.acme_order))
        assert issuer is not None
        # Read once under the lease: the stored version is the check-and-set for both the
        # certificate and the status written after it (a race falls back to re-reading).
        before = None if first else known[1] if known is not None \
            else self._store.read_status(ref)
        journal = StoreJournal(self._store, ref, nothing_to_resume=first)
        try:
            issued = issuer.issue(IssueRequest(
                ref, spec.dns_names, spec.key_type,
                replaces=renewal_info.replaces_for(self._store, spec, before[0] if before
                                                   else None),
                csr_pem=spec.csr,
                not_after=before[0].current.not_after if before and before[0].current
                else None, profile=spec.profile), journal)
        except IssuanceFailed as exc:
            return self._hint(spec, self._setbacks.fail(ref, exc, acme_order=spec.acme_order))
        return self._record_issued(spec, issuer, issued, before, journal)

    def _issuer_for(self, spec: CertificateSpec,
                    ) -> tuple[Issuer | None, CertlockerError | None]:
        """The spec's issuer, or why no order may be placed for it."""
        issuer = self.issuers.get(spec.issuer)
        if issuer is None:
            # This deployment's settings, not the CA, refuse: retried, so a configuration
            # deployed later takes over without an operator renewing every certificate.
            return None, IssuanceFailed(f"issuer {spec.issuer!r} is not configured")
        # Name ownership again under the lease, before any order: a spec written straight
        # into Vault, or a grant withdrawn since the declaration, never reaches the CA.
        refused = self._ownership.enforce(spec)
        if refused:
            return None, NamesRefused(summary(refused), [r.to_json() for r in refused])
        return issuer, None

    def _record_issued(self, spec: CertificateSpec, issuer: Issuer,
                       issued: IssuedCertificate,
                       before: tuple[CertificateStatus, int] | None,
                       journal: StoreJournal) -> CertificateStatus:
        """Store the certificate, clear the journal, then write the VALID status."""
        ref = spec.ref
        known = before[0].current if before else None
        # The CA's renewal window (ARI, advisory: never raises) is asked while the
        # certificate and the journal are written: one CA round trip less before VALID.
        asked = self._side.submit(renewal_info.fetch, issuer, issued.info.serial,
                                  issued.certificate, self._clock.now())
        # No certificate recorded: expect none stored (a write refused by a leftover
        # version falls back to reading the current one).
        version = self._store.store_certificate(
            ref, issued, expected_version=known.vault_version if known else 0)
        # The key is in the service's path now, so the journal's copy goes before the
        # status says VALID: a process that dies between the two leaves a certificate the
        # next attempt issues again, never a key in service that certlocker could read
        # (nothing looks at a VALID certificate's journal).
        if spec.csr is None:  # an order with the client's CSR journaled no key
            journal.clear()
        # The status carries the public leaf: certlocker cannot read certs/ back. For a
        # client-held key also the chain and the order, which certlocker hands out itself.
        info = dataclasses.replace(issued.info, vault_version=version,
                                   key_type=spec.key_type.value,
                                   # the fallback's name when it stood in (governed_issuer)
                                   issuer_name=issued.info.issuer_name or spec.issuer,
                                   leaf_pem=issued.certificate,
                                   chain_pem=issued.chain if spec.csr else None,
                                   acme_order=spec.acme_order,
                                   issuer_sha256=first_fingerprint(issued.chain),
                                   profile=spec.profile or "")
        window = asked.result()
        replaced: list[dt.datetime] = []

        def stored(old: CertificateStatus | None) -> CertificateStatus:
            if old is not None and old.current is not None:
                replaced.append(old.current.not_after)
            return CertificateStatus(
                state=State.VALID, current=info, updated_at=self._clock.now(),
                targets=old.targets if old else (),
                history=_history(old), revocation=old.revocation if old else None,
                ari=window, renewal_request=_unanswered(old, before))

        status = update_status(self._store, ref, stored, known=before)
        self._after_issued(spec, status, info, replaced[-1] if replaced else None)
        return status

    def _after_issued(self, spec: CertificateSpec, status: CertificateStatus,
                      info: CertificateInfo, replaced: dt.datetime | None) -> None:
        """The records that follow a stored certificate (due hint, expiry index, audit
        event), written side by side: each needs only the stored status, and all are
        done before the lease is released."""
        ref = spec.ref

        def expiry() -> None:
            try:
                self._expiry.moved(ref, replaced, info.not_after)
            except CertlockerError as exc:  # a hint: the reconciler's sweep files it again
                log.warning("expiry_index.failed", extra={"certificate": ref.id,
                                                          "error": type(exc).__name__})

        after: list[cf.Future[Any]]
        after = [self._side.submit(self._hint, spec, status), self._side.submit(expiry),
                 self._side.submit(
                     audited, self._audit, self._actor, "certificate.issue", ref.id,
                     "success", details={
                         "serial": info.serial, "sha256_fingerprint": info.sha256_fingerprint,
                         "not_after": str(info.not_after), "vault_version": info.vault_version,
                         "issuer": info.issuer_name,
                         **({"fallback_for": info.fallback_for,
                             "fallback_reason": info.fallback_reason}
                            if info.fallback_for else {})})]
        cf.wait(after)
        log.info("certificate.issued", extra={
            "certificate": ref.id, "serial": info.serial, "not_after": str(info.not_after),
            "sha256_fingerprint": info.sha256_fingerprint, "vault_version": info.vault_version})


def _unanswered(old: CertificateStatus | None,
                before: tuple[CertificateStatus, int] | None) -> RenewalRequest | None:
    """The renewal request an issuance leaves standing: one made after it read the status
    under its lease (its key and order came before that request), none otherwise."""
    request = old.renewal_request if old else None
    seen = before[0].renewal_request if before else None
    return None if request == seen else request


def _history(old: CertificateStatus | None) -> tuple[str, ...]:
    if old is None or old.current is None:
        return old.history if old else ()
    return ((old.current.sha256_fingerprint,) + old.history)[:20]
