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
import random
import socket
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, Protocol

from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock
from ..errors import (AccessDenied, CertlockerError, Conflict, IssuanceFailed, NamesRefused,
                      NotFound, OwnTokenRefused, RateLimited)
from ..models import (CertificateRef, CertificateSpec, CertificateStatus, IssueRequest,
                      RenewalRequest, State)
from ..ownership import summary
from ..ports import IssuanceObserver, Issuer, OperatorStore
from .. import specs
from . import backoff, planning, renewal_info
from .due_index import DueIndex, Hint
from .expiry_index import ExpiryIndex
from .name_grants import NameOwnership
from .observe import NoObserver
from .ports import Store
from .vault_adapters import StoreJournal, StoreLease

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = dt.timedelta(days=90)  # backoff scale before a first certificate
HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class CertificateView:
    """A spec with its status: what the API and CLI show. A retired certificate's spec
    is the one it had; ``retirement`` is its retirement record's view."""

    spec: CertificateSpec
    status: CertificateStatus
    retirement: dict[str, Any] | None = None


class RetiredLookup(Protocol):
    """``lifecycle.retirement.RetiredRecords``: the spec a retired certificate had."""

    def lookup(self, ref: CertificateRef, status: CertificateStatus
               ) -> tuple[CertificateSpec, dict[str, Any] | None] | None: ...


class CertificateService:
    def __init__(self, store: Store, issuers: Mapping[str, Issuer], *,
                 clock: Clock | None = None, workers: int = 8,
                 issuance_timeout: float = 300, audit: Auditor | None = None,
                 actor: str = "certlocker", observer: IssuanceObserver | None = None,
                 due_index: DueIndex | None = None,
                 backoff_policy: backoff.BackoffPolicy = backoff.DEFAULT_POLICY,
                 ownership: NameOwnership | None = None,
                 retired: RetiredLookup | None = None) -> None:
        self._store = store
        self.ownership = ownership or NameOwnership(store, audit=audit, clock=clock)
        self._retired = retired
        self._backoff = backoff_policy
        self._due = due_index
        # Declarations' hints while their issuance runs -> filed again by it (_hint)?
        self._refiled: dict[Hint, bool] = {}
        self._clock = clock or SystemClock()
        self._expiry = ExpiryIndex(store, self._clock)
        self._rng = random.Random()
        self._observer = observer or NoObserver()
        self._audit = audit or NoAudit()
        self._actor = actor
        self._issuers = issuers
        self._lease_ttl = issuance_timeout + 60
        self._pool = cf.ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix="issuance")
        self._readers = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix="reads")
        # Independent records written side by side (audit event, index hints, journal
        # cleanup): one round trip of latency instead of one each.
        self._side = cf.ThreadPoolExecutor(max_workers=max(4, workers),
                                           thread_name_prefix="side-writes")

    # -- operator actions (caller's token) ---------------------------------------------
    def declare(self, caller: OperatorStore, spec: CertificateSpec,
                actor: str = "operator") -> cf.Future[CertificateStatus]:
        """Record the spec with the caller's token, mark it pending, start issuance.

        :raises AccessDenied: when Vault denies the caller this environment/service.
        :raises AlreadyExists: when the certificate is already declared.
        """
        return self.declare_with_status(caller, spec, actor)[0]

    def declare_with_status(self, caller: OperatorStore, spec: CertificateSpec,
                            actor: str = "operator",
                            ) -> tuple[cf.Future[CertificateStatus], CertificateStatus]:
        """``declare``, also returning the pending status as of the declaration.

        A certificate never declared before has no status record: ``view`` shows the
        absence as pending, so nothing is written for it. A status left by an earlier
        life of the same name (a retired tombstone) is reset to pending, keeping its
        history. Raises as ``declare``, and ``NamesRefused`` when the service is not
        granted every name (nothing is written then).
        """
        granting = self.ownership.admit(caller, spec, actor)
        try:
            caller.create_spec(spec)
        except CertlockerError as exc:
            audited(self._audit, actor, "spec.create", spec.ref.id, "denied"
                    if exc.status in (401, 403) else "failure", reason=exc.detail)
            raise
        if granting:  # an administrator's declaration grants its names, before any order
            self.ownership.add_names(caller, spec.ref.environment, spec.ref.service,
                                     granting, actor=actor, subject=spec.ref.id)
        recorded = self._side.submit(
            audited, self._audit, actor, "spec.create", spec.ref.id, "success",
            details={"dns_names": list(spec.dns_names), "issuer": spec.issuer,
                     "key_type": spec.key_type.value})
        try:
            # Reset before the issuance starts, which may write VALID over it otherwise.
            earlier = self._store.read_status(spec.ref)
            if earlier is None:
                pending = CertificateStatus(state=State.PENDING)
            else:
                pending = self._set_status(spec.ref, lambda old: CertificateStatus(
                    state=State.PENDING, updated_at=self._clock.now(),
                    history=old.history if old else ()), known=earlier)
            hint = None
            if self._due is not None:  # the reconciler takes over if this process dies
                hint = self._due.schedule_quietly(spec, pending, self._clock.now())
            future = self.schedule(spec.ref, declared=True, first_lease=earlier is None,
                                   hint=hint)
        finally:
            recorded.result()  # the event is in the trail before the caller hears back
        return future, pending

    def update_spec(self, caller: OperatorStore, ref: CertificateRef,
                    patch: Mapping[str, Any], rules: specs.SpecRules,
                    actor: str = "operator",
                    check: Callable[[CertificateSpec], None] | None = None,
                    ) -> tuple[CertificateSpec, list[str], cf.Future[CertificateStatus] | None]:
        """Change a declared certificate's spec by a JSON merge ``patch`` (RFC 7396),
        validated exactly like a declaration and written with the caller's token with
        check-and-set against the version read. A spec that changed clears the status's
        backoff (a fix is tried at once), and any issuance it makes needed (new names,
        key type, issuer) is queued; the due index is told either way. Returns the new
        spec, the fields that changed (empty: nothing was written) and the queued
        issuance, if any. ``check`` sees the patched spec before anything is written and
        may raise to refuse it (the API's target allow-list).

        :raises NotFound: :raises AccessDenied: :raises InvalidInput:
        :raises NamesRefused: new names the service is not granted.
        :raises Conflict: the spec changed between our read and write (retry)."""
        path = caller.paths.spec(ref)
        record, version = caller.read_json(path)
        if record is None or not version:
            raise NotFound(f"no certificate {ref.id}")
        spec = specs.patched(record, patch, ref, rules)
        before = specs.from_record(record, ref, rules)
        changed = [f for f in specs.FIELDS if before.problem is not None
                   or spec.to_json().get(f) != before.to_json().get(f)]
        if not changed:
            return spec, [], None
        if check is not None:
            check(spec)
        granting: tuple[str, ...] = ()
        if before.problem is not None or set(spec.dns_names) != set(before.dns_names):
            granting = self.ownership.admit(caller, spec, actor)
        try:
            caller.write(path, spec.to_json(), cas=version)
        except CertlockerError as exc:
            audited(self._audit, actor, "spec.update", ref.id, "denied"
                    if exc.status in (401, 403) else "failure", reason=exc.detail[:500])
            if isinstance(exc, Conflict):
                raise Conflict(f"{ref.id} changed while it was being patched; read it "
                               "again and retry") from None
            raise
        if granting:
            self.ownership.add_names(caller, ref.environment, ref.service, granting,
                                     actor=actor, subject=ref.id)
        audited(self._audit, actor, "spec.update", ref.id, "success",
                details={"changed": changed, "dns_names": list(spec.dns_names),
                         "targets": [t.address for t in spec.targets]})
        return spec, changed, self._act_on_change(spec)

    def _act_on_change(self, spec: CertificateSpec) -> cf.Future[CertificateStatus] | None:
        """After a spec change: clear backoff and a refusal (the change may be the fix),
        queue an issuance if one is now needed, and file the due hint."""
        now = self._clock.now()
        found = self._store.read_status(spec.ref)
        status = found[0] if found else None
        if status is not None and (status.next_attempt_at is not None
                                   or not status.retryable):
            known = status

            def cleared(old: CertificateStatus | None) -> CertificateStatus:
                return (old or known).replace(next_attempt_at=None, retryable=True,
                                              updated_at=now)

            status = self._set_status(spec.ref, cleared)
        if self._due is not None:
            self._due.schedule_quietly(spec, status, now)
        if planning.decide(spec, status, now).needed:
            return self._pool.submit(self.issue, spec.ref, self._needed)
        return None

    def view(self, caller: Store, ref: CertificateRef) -> CertificateView:
        """A retired certificate, whose spec is gone, is shown with the spec it had
        (the caller's read of its status decides whether they may see it).

        :raises NotFound: :raises AccessDenied:"""
        found = caller.read_spec(ref)
        status = caller.read_status(ref) if found is not None or self._retired else None
        if status is not None and status[0].state is State.RETIRED and self._retired:
            retired = self._retired.lookup(ref, status[0])
            if retired is not None:
                return CertificateView(found[0] if found else retired[0], status[0],
                                       retirement=retired[1])
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        spec = found[0]
        current = status[0] if status else CertificateStatus(state=State.PENDING)
        if spec.problem is not None:  # shown at once, before the reconciler records it
            current = current.replace(state=State.INVALID, last_error=spec.problem)
        return CertificateView(spec, current)

    def refs(self, caller: Store, environment: str | None = None,
             service: str | None = None) -> Iterable[CertificateRef]:
        """Every declared certificate the caller may list, in path order."""
        return _listed(caller, caller.paths.specs_dir, environment, service)

    def journaled(self) -> Iterable[CertificateRef]:
        """Every certificate with an in-flight journal (a key not yet stored)."""
        return _listed(self._store, self._store.paths.inflight_dir)

    def finish_journals(self) -> None:
        """Take every in-flight journal through ``issue`` under the lease: resumed if its
        certificate still needs issuing, cleared if not, left alone while a live holder
        works on it. For journals nothing else looks at again: a dead process's beside a
        certificate that is up to date (releases that cleared the journal after the
        status kept the key of a certificate in service there).

        :raises CertlockerError: the journals cannot be listed."""
        for ref in list(self.journaled()):
            try:
                self.issue(ref, decide=self._needed)
            except NotFound:
                log.warning("journal.without_spec", extra={"certificate": ref.id})
            except CertlockerError as exc:
                log.warning("journal.unfinished", extra={
                    "certificate": ref.id, "error": type(exc).__name__})

    def renew(self, caller: Store, ref: CertificateRef,
              actor: str = "operator") -> cf.Future[CertificateStatus]:
        """Force a new issuance now (the caller must be allowed to read the spec).

        The request is in Vault before this returns: a ``renewal_request`` in the status
        (check-and-set; it also ends a backoff or a refusal's wait, as an operator's
        renewal always has) and a
        due hint at now, so if every process dies after the answer the reconciler's next
        tick still issues (``reissue.RENEWAL_REQUESTED``). The queued issuance only makes
        it sooner. A certificate never issued has nothing to record: its spec already
        makes it ``missing``.
        """
        self.view(caller, ref)
        now = self._clock.now()
        found = self._store.read_status(ref)
        if found is not None:
            request = RenewalRequest(at=now, by=actor)

            def requested(old: CertificateStatus | None) -> CertificateStatus:
                # An operator's renewal is also the retry a refusal waits for.
                return (old or CertificateStatus(State.PENDING)).replace(
                    renewal_request=request, next_attempt_at=None, retryable=True)

            self._set_status(ref, requested, known=found)
        if self._due is not None:
            self._due.put(ref, now)
        audited(self._audit, actor, "certificate.renew.requested", ref.id, "success")
        return self.schedule(ref)

    def views(self, caller: Store, refs: list[CertificateRef]) -> list[CertificateView | None]:
        """Read several views at once with the caller's token; None where the caller may
        not read one or it is gone."""
        def one(ref: CertificateRef) -> CertificateView | None:
            try:
                return self.view(caller, ref)
            except OwnTokenRefused:
                raise  # not the caller's doing: the whole answer would be wrong
            except (NotFound, AccessDenied):
                return None
        return list(self._readers.map(one, refs))

    def expiring_refs(self, cutoff: dt.datetime, environment: str | None = None,
                      service: str | None = None) -> Iterable[CertificateRef]:
        """Certificates whose current certificate expires by ``cutoff`` (from the expiry
        index, read with certlocker's own token: callers re-read each with theirs)."""
        return self._expiry.refs_until(cutoff, environment, service)

    def wait_settled(self, ref: CertificateRef, future: cf.Future[CertificateStatus],
                     settled: Callable[[CertificateStatus], bool],
                     timeout: float) -> CertificateStatus | None:
        """Wait up to ``timeout`` seconds for our issuance, then, if another worker or
        replica holds the certificate's lease, for the status it writes to satisfy
        ``settled``. Returns the last status seen."""
        deadline = time.monotonic() + timeout
        try:
            status: CertificateStatus | None = future.result(timeout=timeout)
        except cf.TimeoutError:
            status = None
        delay = 0.05
        while status is None or not settled(status):
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
            found = self._store.read_status(ref)
            status = found[0] if found else None
        return status

    # -- the work (certlocker's own token) ---------------------------------------------
    def schedule(self, ref: CertificateRef, *, declared: bool = False,
                 first_lease: bool = False, hint: Hint | None = None,
                 ) -> cf.Future[CertificateStatus]:
        """Queue an issuance on this process's pool; ``declared``: one a declaration
        queued, with the due hint it filed (see ``_issue_declared``). Either is decided
        again under the lease: the reconciler may have done the work already."""
        if declared:
            return self._pool.submit(self._issue_declared, ref, hint, first_lease)
        return self._pool.submit(self.issue, ref, self._needed)

    def _issue_declared(self, ref: CertificateRef, hint: Hint | None,
                        first_lease: bool) -> CertificateStatus:
        """The issuance a declaration queued. A reconciler may have taken it over while it
        waited (the declaration's hint is due at once), so it is decided again under the
        lease; once the certificate is issued, or its failure has filed its retry, the
        declaration's hint is removed so the reconciler does not look again, unless the
        issuance filed its next action (a retry, a first verification) in the same
        minute: that is the same hint now, and removing it would lose the action."""
        if hint is not None:
            self._refiled[hint] = False
        try:
            status = self.issue(ref, decide=self._needed, first_lease=first_lease)
        finally:
            refiled = self._refiled.pop(hint, False) if hint is not None else False
        if (hint is not None and self._due is not None and not refiled
                and (status.state is State.VALID or status.last_error)):
            self._due.remove(hint)
        return status

    def _needed(self, spec: CertificateSpec, status: CertificateStatus | None) -> bool:
        return planning.decide(spec, status, self._clock.now()).needed

    def issue(self, ref: CertificateRef, decide: Callable[
            [CertificateSpec, CertificateStatus | None], bool] | None = None, *,
              first_lease: bool = False) -> CertificateStatus:
        """Issue (or resume issuing) one certificate under a lease. Safe to call from
        several replicas at once: only the lease holder works, the others return the
        current status. ``decide`` (the reconciler's) is asked again under the lease with
        fresh spec and status, so work another replica just finished is not repeated.
        ``first_lease``: the certificate was just declared with no status record, so its lease
        is probably its first: taken create-only, and when it is, nothing earlier can be
        resumed or replaced (no journal or status read; every write after it is still
        check-and-set, so a wrong guess costs a retry, not a second version).

        :raises NotFound: when the spec is gone."""
        # One holder per call: two threads of one process must not share a lease.
        lease = StoreLease(self._store, ref, f"{HOLDER}:{uuid.uuid4().hex[:8]}")
        if not lease.acquire(time.time(), self._lease_ttl, probably_first=first_lease):
            current = self._store.read_status(ref)
            return current[0] if current else CertificateStatus(state=State.ISSUING)
        if decide is not None and not lease.first:  # a first lease: nothing was issued
            try:
                skip = self._still_needed(ref, decide)
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
            result = self._issue_locked(ref, first=lease.first)
            ok = result.last_error is None
            return result
        finally:
            lease.release()
            log.info("issuance.finished", extra={
                "certificate": ref.id, "seconds": round(time.monotonic() - started, 3)})
            self._observer.issuance_finished(ref, time.monotonic() - started, ok)

    def _still_needed(self, ref: CertificateRef, decide: Callable[
            [CertificateSpec, CertificateStatus | None], bool]) -> CertificateStatus | None:
        """None when ``decide`` still wants an issuance, else the status to return."""
        found = self._store.read_spec(ref)
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        current = self._store.read_status(ref)
        status = current[0] if current else None
        if decide(found[0], status):
            return None
        return status or CertificateStatus(state=State.PENDING)

    def _issue_locked(self, ref: CertificateRef, *, first: bool = False) -> CertificateStatus:
        found = self._store.read_spec(ref)
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        spec = found[0]
        if spec.problem is not None:
            return self.mark_invalid(spec)
        issuer = self._issuers.get(spec.issuer)
        if issuer is None:
            # This deployment's settings, not the CA, refuse: retried, so a configuration
            # deployed later takes over without an operator renewing every certificate.
            return self._hint(spec, self._fail(ref, IssuanceFailed(
                f"issuer {spec.issuer!r} is not configured")))
        # Name ownership again under the lease, before any order: a spec written straight
        # into Vault, or a grant withdrawn since the declaration, never reaches the CA.
        refused = self.ownership.enforce(spec)
        if refused:
            return self._hint(spec, self._fail(ref, NamesRefused(
                summary(refused), [r.to_json() for r in refused])))
        # Read once under the lease: the stored version is the check-and-set for both the
        # certificate and the status written after it (a race falls back to re-reading).
        before = None if first else self._store.read_status(ref)
        journal = StoreJournal(self._store, ref, nothing_to_resume=first)
        try:
            issued = issuer.issue(IssueRequest(
                ref, spec.dns_names, spec.key_type,
                replaces=renewal_info.replaces_for(self._store, spec, before[0] if before
                                                   else None)), journal)
        except IssuanceFailed as exc:
            return self._hint(spec, self._fail(ref, exc))
        known = before[0].current if before else None
        # No certificate recorded: expect none stored (a write refused by a leftover
        # version falls back to reading the current one).
        version = self._store.store_certificate(
            ref, issued, expected_version=known.vault_version if known else 0)
        # The key is in the service's path now, so the journal's copy goes before the
        # status says VALID: a process that dies between the two leaves a certificate the
        # next attempt issues again, never a key in service that certlocker could read
        # (nothing looks at a VALID certificate's journal).
        journal.clear()
        # The status carries the public leaf: certlocker cannot read certs/ back.
        info = dataclasses.replace(issued.info, vault_version=version,
                                   key_type=spec.key_type.value, issuer_name=spec.issuer,
                                   leaf_pem=issued.certificate)
        window = renewal_info.fetch(issuer, info.serial, issued.certificate,
                                    self._clock.now())
        replaced: list[dt.datetime] = []

        def stored(old: CertificateStatus | None) -> CertificateStatus:
            if old is not None and old.current is not None:
                replaced.append(old.current.not_after)
            return CertificateStatus(
                state=State.VALID, current=info, updated_at=self._clock.now(),
                targets=old.targets if old else (),
                history=_history(old), revocation=old.revocation if old else None,
                ari=window, renewal_request=_unanswered(old, before))

        status = self._set_status(ref, stored, known=before)

        def expiry() -> None:
            try:
                self._expiry.moved(ref, replaced[-1] if replaced else None, info.not_after)
            except CertlockerError as exc:  # a hint: the reconciler's sweep files it again
                log.warning("expiry_index.failed", extra={"certificate": ref.id,
                                                          "error": type(exc).__name__})

        # Each needs only the stored status; all are done before the lease is released.
        after: list[cf.Future[Any]]
        after = [self._side.submit(self._hint, spec, status), self._side.submit(expiry),
                 self._side.submit(
                     audited, self._audit, self._actor, "certificate.issue", ref.id,
                     "success", details={
                         "serial": info.serial, "sha256_fingerprint": info.sha256_fingerprint,
                         "not_after": str(info.not_after), "vault_version": version,
                         "issuer": spec.issuer})]
        cf.wait(after)
        log.info("certificate.issued", extra={
            "certificate": ref.id, "serial": info.serial, "not_after": str(info.not_after),
            "sha256_fingerprint": info.sha256_fingerprint, "vault_version": version})
        return status

    def refresh_renewal_info(self, spec: CertificateSpec, status: CertificateStatus | None,
                             ) -> CertificateStatus | None:
        """Fetch the CA's renewal window (RFC 9773) for the current certificate when
        the last answer's Retry-After is over; the new status, or ``status`` unchanged.

        :raises Conflict: the status kept changing under us.
        """
        window = renewal_info.refreshed(self._store, self._issuers, spec, status,
                                        self._clock.now())
        if window is None:
            return status

        def change(old: CertificateStatus | None) -> CertificateStatus:
            if old is None or old.current is None or old.current.serial != window.serial:
                raise _Superseded()
            return old.replace(ari=window)

        try:
            return self._set_status(spec.ref, change)
        except _Superseded:  # renewed meanwhile: that issuance fetched its own window
            found = self._store.read_status(spec.ref)
            return found[0] if found else status

    def mark_invalid(self, spec: CertificateSpec) -> CertificateStatus:
        """Record that the stored spec does not parse (once per reason): its status says
        ``invalid`` with the reason; the certificate already served, if any, stays in
        ``current``. Nothing is ordered for it until the spec is fixed."""
        assert spec.problem is not None

        def update(old: CertificateStatus | None) -> CertificateStatus:
            base = old or CertificateStatus(State.PENDING)
            if base.state is State.INVALID and base.last_error == spec.problem:
                raise _Superseded()
            return base.replace(state=State.INVALID, last_error=spec.problem,
                                next_attempt_at=None, updated_at=self._clock.now())

        try:
            status = self._set_status(spec.ref, update)
        except _Superseded:
            found = self._store.read_status(spec.ref)
            return found[0] if found else CertificateStatus(State.INVALID,
                                                            last_error=spec.problem)
        log.warning("spec.invalid", extra={"certificate": spec.ref.id,
                                           "error": spec.problem[:300]})
        audited(self._audit, self._actor, "spec.invalid", spec.ref.id, "failure",
                reason=spec.problem[:500])
        return status

    def _fail(self, ref: CertificateRef, exc: CertlockerError) -> CertificateStatus:
        """Record a failed attempt. A retryable one is tried again after a backoff; one
        the CA or a check refused for good (``IssuanceFailed.retryable`` False: a CAA
        record, a rejected identifier) is not retried until an operator asks (renew) or
        the certificate is declared again, so no retry storm and no retries-exhausted
        alert for what retrying cannot fix."""
        now = self._clock.now()
        retryable = not isinstance(exc, IssuanceFailed) or exc.retryable

        def update(old: CertificateStatus | None) -> CertificateStatus:
            attempts = (old.attempts if old else 0) + 1
            base = old or CertificateStatus(State.PENDING)
            lifetime = (base.current.not_after - base.current.not_before if base.current
                        else DEFAULT_LIFETIME)
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            # The current certificate (if any) is still the one served: VALID, not ISSUING;
            # a revoked one stays REVOKED until its replacement is stored.
            state = (State.REFUSED if isinstance(exc, NamesRefused) else
                     State.FAILED if base.current is None else
                     State.REVOKED if base.state is State.REVOKED else State.VALID)
            if not retryable:  # waits for an operator's renew or a new declaration
                return base.replace(state=state, last_error=exc.detail, attempts=attempts,
                                    updated_at=now, next_attempt_at=None, retryable=False)
            return base.replace(state=state,
                                last_error=exc.detail, attempts=attempts, updated_at=now,
                                retryable=True,
                                next_attempt_at=backoff.next_attempt(
                                    attempts, now, lifetime, self._rng,
                                    retry_after=retry_after, policy=self._backoff))

        log.warning("issuance.failed", extra={"certificate": ref.id, "error": exc.detail,
                                              "retryable": retryable})
        audited(self._audit, self._actor, "certificate.issue", ref.id, "failure",
                reason=exc.detail[:500])
        return self._set_status(ref, update)

    def _hint(self, spec: CertificateSpec, status: CertificateStatus) -> CertificateStatus:
        """File the due-index hint for the certificate's next action (retry or renewal)."""
        if self._due is not None:
            filed = self._due.schedule_quietly(spec, status, self._clock.now())
            if filed is not None and filed in self._refiled:
                self._refiled[filed] = True  # a declaration's hint, filed again
        return status

    def update_status(self, ref: CertificateRef,
                      change: Callable[[CertificateStatus | None], CertificateStatus],
                      ) -> CertificateStatus:
        """Check-and-set read-modify-write of the status for other lifecycle steps
        (verification): ``change`` gets the stored status (or None) and may raise to abort.

        :raises Conflict: the status kept changing under us.
        """
        return self._set_status(ref, change)

    def _set_status(self, ref: CertificateRef,
                    change: Callable[[CertificateStatus | None], CertificateStatus], *,
                    known: tuple[CertificateStatus, int] | None | bool = False,
                    ) -> CertificateStatus:
        """Read-modify-write of the status with check-and-set, retried on a race.
        ``known`` is a status just read (or None for none), saving the first read."""
        for attempt in range(10):
            found = self._store.read_status(ref) if attempt or known is False else known
            old, version = (found if found else (None, 0))  # type: ignore[misc]
            new = change(old)
            try:
                self._store.write_status(ref, new, cas=version)
                return new
            except Conflict:
                continue
        raise Conflict(f"status of {ref.id} keeps changing under us")

    @property
    def issuers(self) -> Mapping[str, Issuer]:
        return self._issuers

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._side.shutdown(wait=False, cancel_futures=True)


class _Superseded(Exception):
    """The certificate a renewal window was fetched for is no longer current."""


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


def _listed(caller: Store, folder: Callable[..., str], environment: str | None = None,
            service: str | None = None) -> Iterable[CertificateRef]:
    """The certificates under ``folder(env, service)`` (``<root>/<env>/<service>/<name>``)."""
    # '_' entries are administrators' documents (specs/_system/...), never certificates.
    envs = [environment] if environment else [
        e.rstrip("/") for e in caller.list(folder()) if not e.startswith("_")]
    for env in envs:
        services = [service] if service else [
            s.rstrip("/") for s in caller.list(folder(env)) if not s.startswith("_")]
        for svc in services:
            for name in caller.list(folder(env, svc)):
                if not name.endswith("/") and not name.startswith("_"):
                    yield CertificateRef(env, svc, name)
