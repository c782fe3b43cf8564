"""Certificate lifecycle operations: declare, observe, issue.

Knows nothing of Flask or hvac. Operator-facing reads and writes go through the
*caller's* store (their Vault token, so Vault's policies decide); certlocker's own
store does the work operators never do directly (status, certificates, in-flight state).
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
from typing import Iterable, Mapping

from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock
from ..errors import CertlockerError, Conflict, IssuanceFailed, NotFound, RateLimited
from ..issuance.base import IssueRequest, Issuer
from ..models import (CertificateRef, CertificateSpec, CertificateStatus, State)
from .ports import Store
from .vault_adapters import StoreJournal, StoreLease

log = logging.getLogger(__name__)

HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class CertificateView:
    """A spec with its status: what the API and CLI show."""

    spec: CertificateSpec
    status: CertificateStatus


class CertificateService:
    def __init__(self, store: Store, issuers: Mapping[str, Issuer], *,
                 clock: Clock | None = None, workers: int = 8,
                 issuance_timeout: float = 300, audit: Auditor | None = None,
                 actor: str = "certlocker") -> None:
        self._store = store
        self._audit = audit or NoAudit()
        self._actor = actor
        self._issuers = issuers
        self._clock = clock or SystemClock()
        self._lease_ttl = issuance_timeout + 60
        self._pool = cf.ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix="issuance")

    # -- operator actions (caller's token) ---------------------------------------------
    def declare(self, caller: Store, spec: CertificateSpec,
                actor: str = "operator") -> cf.Future[CertificateStatus]:
        """Record the spec with the caller's token, mark it pending, start issuance.

        :raises AccessDenied: when Vault denies the caller this environment/service.
        :raises AlreadyExists: when the certificate is already declared.
        """
        try:
            caller.create_spec(spec)
        except CertlockerError as exc:
            audited(self._audit, actor, "spec.create", spec.ref.id, "denied"
                    if exc.status in (401, 403) else "failure", reason=exc.detail)
            raise
        audited(self._audit, actor, "spec.create", spec.ref.id, "success",
                details={"dns_names": list(spec.dns_names), "issuer": spec.issuer,
                         "key_type": spec.key_type.value})
        self._set_status(spec.ref, lambda old: CertificateStatus(
            state=State.PENDING, updated_at=self._clock.now(),
            history=old.history if old else ()))
        return self.schedule(spec.ref)

    def view(self, caller: Store, ref: CertificateRef) -> CertificateView:
        """:raises NotFound: :raises AccessDenied:"""
        found = caller.read_spec(ref)
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        status = caller.read_status(ref)
        return CertificateView(found[0], status[0] if status else
                               CertificateStatus(state=State.PENDING))

    def refs(self, caller: Store, environment: str | None = None,
             service: str | None = None) -> Iterable[CertificateRef]:
        """Every declared certificate the caller may list, in path order."""
        paths = caller.paths
        envs = [environment] if environment else [
            e.rstrip("/") for e in caller.list(paths.specs_dir())]
        for env in envs:
            services = [service] if service else [
                s.rstrip("/") for s in caller.list(paths.specs_dir(env))]
            for svc in services:
                for name in caller.list(paths.specs_dir(env, svc)):
                    if not name.endswith("/") and not name.startswith("_"):
                        yield CertificateRef(env, svc, name)

    def renew(self, caller: Store, ref: CertificateRef,
              actor: str = "operator") -> cf.Future[CertificateStatus]:
        """Force a new issuance now (the caller must be allowed to read the spec)."""
        self.view(caller, ref)
        audited(self._audit, actor, "certificate.renew.requested", ref.id, "success")
        return self.schedule(ref)

    # -- the work (certlocker's own token) ---------------------------------------------
    def schedule(self, ref: CertificateRef) -> cf.Future[CertificateStatus]:
        return self._pool.submit(self.issue, ref)

    def issue(self, ref: CertificateRef) -> CertificateStatus:
        """Issue (or resume issuing) one certificate under a lease. Safe to call from
        several replicas at once: only the lease holder works, the others return the
        current status."""
        lease = StoreLease(self._store, ref, HOLDER)
        if not lease.acquire(time.time(), self._lease_ttl):
            current = self._store.read_status(ref)
            return current[0] if current else CertificateStatus(state=State.ISSUING)
        started = time.monotonic()
        try:
            return self._issue_locked(ref)
        finally:
            lease.release()
            log.info("issuance.finished", extra={
                "certificate": ref.id, "seconds": round(time.monotonic() - started, 3)})

    def _issue_locked(self, ref: CertificateRef) -> CertificateStatus:
        found = self._store.read_spec(ref)
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        spec = found[0]
        issuer = self._issuers.get(spec.issuer)
        if issuer is None:
            return self._fail(ref, IssuanceFailed(f"issuer {spec.issuer!r} is not configured",
                                                  retryable=False))
        self._set_status(ref, lambda old: (old or CertificateStatus(State.PENDING)).replace(
            state=State.ISSUING, updated_at=self._clock.now()))
        journal = StoreJournal(self._store, ref)
        try:
            issued = issuer.issue(IssueRequest(ref, spec.dns_names, spec.key_type), journal)
        except IssuanceFailed as exc:
            return self._fail(ref, exc)
        version = self._store.store_certificate(ref, issued)
        info = dataclasses.replace(issued.info, vault_version=version)
        status = self._set_status(ref, lambda old: CertificateStatus(
            state=State.VALID, current=info, updated_at=self._clock.now(),
            targets=old.targets if old else (),
            history=_history(old)))
        journal.clear()  # the in-flight key is in the service's path now
        audited(self._audit, self._actor, "certificate.issue", ref.id, "success",
                details={"serial": info.serial, "sha256_fingerprint": info.sha256_fingerprint,
                         "not_after": str(info.not_after), "vault_version": version,
                         "issuer": spec.issuer})
        log.info("certificate.issued", extra={
            "certificate": ref.id, "serial": info.serial, "not_after": str(info.not_after),
            "sha256_fingerprint": info.sha256_fingerprint, "vault_version": version})
        return status

    def _fail(self, ref: CertificateRef, exc: CertlockerError) -> CertificateStatus:
        now = self._clock.now()

        def update(old: CertificateStatus | None) -> CertificateStatus:
            attempts = (old.attempts if old else 0) + 1
            delay = exc.retry_after if isinstance(exc, RateLimited) and exc.retry_after else (
                min(60 * 2 ** (attempts - 1), 6 * 3600))
            base = old or CertificateStatus(State.PENDING)
            return base.replace(state=State.FAILED if base.current is None else base.state,
                                last_error=exc.detail, attempts=attempts, updated_at=now,
                                next_attempt_at=now + dt.timedelta(seconds=delay))

        log.warning("issuance.failed", extra={"certificate": ref.id, "error": exc.detail})
        audited(self._audit, self._actor, "certificate.issue", ref.id, "failure",
                reason=exc.detail[:500])
        return self._set_status(ref, update)

    def _set_status(self, ref: CertificateRef, change) -> CertificateStatus:  # type: ignore[no-untyped-def]
        """Read-modify-write of the status with check-and-set, retried on a race."""
        for _ in range(10):
            found = self._store.read_status(ref)
            old, version = (found if found else (None, 0))
            new = change(old)
            try:
                self._store.write_status(ref, new, cas=version)
                return new
            except Conflict:
                continue
        raise Conflict(f"status of {ref.id} keeps changing under us")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _history(old: CertificateStatus | None) -> tuple[str, ...]:
    if old is None or old.current is None:
        return old.history if old else ()
    return ((old.current.sha256_fingerprint,) + old.history)[:20]
