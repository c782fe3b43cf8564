"""Certificate lifecycle operations: declare, observe, issue.

Knows nothing of Flask or hvac. Operator-facing reads and writes go through the
*caller's* store (their Vault token, so Vault's policies decide); certlocker's own
store does the work operators never do directly (status, certificates, in-flight state).

``CertificateService`` is the one object the API and the reconciler hold; each of its
jobs lives in its own module and it only wires them together: ``views`` (reads),
``declaration`` (spec writes), ``renewal_requests``, ``work_queue`` (this process's
issuances), ``issuing`` (issuance under the lease), ``setbacks`` (failures, invalid
specs), ``journals`` (recovery), ``renewal_info`` (the CA's window) and
``status_writes`` (every status check-and-set).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import random
from typing import Any, Callable, Iterable, Mapping

from .. import specs
from ..audit.recorder import Auditor, NoAudit
from ..clock import Clock, SystemClock
from ..models import CertificateRef, CertificateSpec, CertificateStatus
from .policy import backoff
from .records import journals
from . import renewal_info
from .declaration import Declarations
from .records.due_index import DueIndex, Hint
from .records.expiry_index import ExpiryIndex
from .issuing import HOLDER as HOLDER
from .issuing import Issuance
from ..ports import Issuer, OperatorStore
from .name_grants import NameOwnership
from .observe import IssuanceObserver, NoObserver
from .ports import Store
from .renewal_requests import request_renewal
from .setbacks import DEFAULT_LIFETIME as DEFAULT_LIFETIME
from .setbacks import Setbacks
from .records.status_writes import update_status
from .views import CertificateReads
from .views import CertificateView as CertificateView
from .views import RetiredLookup as RetiredLookup
from .views import listed as _listed
from .wakeups import Wakeups
from .work_queue import IssuanceQueue


@dataclasses.dataclass(frozen=True)
class CertificatePools:
    """The executors a ``CertificateService`` runs on, made by the composition root
    (``issuance``: ``issuance_workers`` threads; ``reads``: 8; ``side``: at least 4).
    They are the service's own: ``shutdown`` stops them."""

    #: this process's queued issuances (``work_queue``)
    issuance: cf.Executor
    #: an operator's several views read at once (``views``)
    reads: cf.Executor
    #: independent records written side by side (audit event, index hints, journal
    #: cleanup): one round trip of latency instead of one each
    side: cf.Executor
    #: one thread while an issuance put off to a rate-limit slot waits (``wakeups``);
    #: None: the reconciler's due-index hint alone brings it back
    wakeups: cf.Executor | None = None




class CertificateService:
    def __init__(self, store: Store, issuers: Mapping[str, Issuer], *,
                 pools: CertificatePools, clock: Clock | None = None,
                 issuance_timeout: float = 300, audit: Auditor | None = None,
                 actor: str = "certlocker", observer: IssuanceObserver | None = None,
                 due_index: DueIndex | None = None,
                 backoff_policy: backoff.BackoffPolicy = backoff.DEFAULT_POLICY,
                 ownership: NameOwnership | None = None,
                 retired: RetiredLookup | None = None) -> None:
        self._store = store
        self.ownership = ownership or NameOwnership(store, audit=audit, clock=clock)
        self._due = due_index
        self._clock = clock or SystemClock()
        self._audit = audit or NoAudit()
        expiry = ExpiryIndex(store, self._clock)
        self._pool = pools.issuance
        self._readers = pools.reads
        self._side = pools.side
        self._reads = CertificateReads(expiry, retired, self._readers)
        # Late-bound: a subclass or a test may replace ``issue`` and ``schedule``.
        self._queue = IssuanceQueue(self._pool, lambda *a, **k: self.issue(*a, **k), store,
                                    self._clock, due_index)
        self._wakeups = (Wakeups(pools.wakeups, lambda ref: self.schedule(ref), self._clock)
                         if pools.wakeups is not None else None)
        self._setbacks = Setbacks(store, self._clock, self._audit, actor, backoff_policy,
                                  random.Random(),
                                  on_deferred=self._wakeups.at if self._wakeups else None)
        self._issuance = Issuance(
            store, issuers, ownership=self.ownership, clock=self._clock,
            observer=observer or NoObserver(), audit=self._audit, actor=actor,
            lease_ttl=issuance_timeout + 60, side=self._side, expiry=expiry,
            setbacks=self._setbacks, file_hint=self._queue.file_hint)
        self._declarations = Declarations(store, self.ownership, audit=self._audit,
                                          clock=self._clock, due=due_index, side=self._side,
                                          schedule=lambda *a, **k: self.schedule(*a, **k))

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
        return self._declarations.declare(caller, spec, actor)

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
        return self._declarations.update_spec(caller, ref, patch, rules, actor, check)

    def record_client_order(self, spec: CertificateSpec, rules: specs.SpecRules,
                            actor: str) -> cf.Future[CertificateStatus]:
        """Record the spec of a certificate ordered with a client's CSR (certlocker's
        ACME server) and queue its issuance; see ``Declarations.record_client_order``."""
        return self._declarations.record_client_order(spec, rules, actor)

    def view(self, caller: Store, ref: CertificateRef) -> CertificateView:
        """A retired certificate, whose spec is gone, is shown with the spec it had
        (the caller's read of its status decides whether they may see it).

        :raises NotFound: :raises AccessDenied:"""
        return self._reads.view(caller, ref)

    def refs(self, caller: Store, environment: str | None = None,
             service: str | None = None) -> Iterable[CertificateRef]:
        """Every declared certificate the caller may list, in path order."""
        return _listed(caller, caller.paths.specs_dir, environment, service)

    def journaled(self) -> Iterable[CertificateRef]:
        """Every certificate with an in-flight journal (a key not yet stored)."""
        return journals.journaled(self._store)

    def finish_journals(self) -> None:
        """Take every in-flight journal through ``issue`` under the lease: resumed if its
        certificate still needs issuing, cleared if not, left alone while a live holder
        works on it. For journals nothing else looks at again: a dead process's beside a
        certificate that is up to date (releases that cleared the journal after the
        status kept the key of a certificate in service there).

        :raises CertlockerError: the journals cannot be listed."""
        journals.finish_journals(self.journaled(), self.issue, self._queue.needed)

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
        future = request_renewal(self._store, ref, actor, clock=self._clock, due=self._due,
                                 audit=self._audit, schedule=self.schedule)
        assert future is not None  # recorded: no ``unless_replaced`` asked
        return future

    def request_renewal(self, ref: CertificateRef, actor: str, *,
                        unless_replaced: str | None = None,
                        ) -> cf.Future[CertificateStatus] | None:
        """``renew`` for a caller already authorized and shown the certificate (a mass
        replacement checks every one with Vault first): the same durable request,
        without reading the view again, and queued here. None when the certificate is
        no longer ``unless_replaced`` (see ``renewal_requests.request_renewal``)."""
        return request_renewal(self._store, ref, actor, clock=self._clock, due=self._due,
                               audit=self._audit, schedule=self.schedule,
                               unless_replaced=unless_replaced)

    def views(self, caller: Store, refs: list[CertificateRef]) -> list[CertificateView | None]:
        """Read several views at once with the caller's token; None where the caller may
        not read one or it is gone."""
        return self._reads.views(caller, refs)

    def expiring_refs(self, cutoff: dt.datetime, environment: str | None = None,
                      service: str | None = None) -> Iterable[CertificateRef]:
        """Certificates whose current certificate expires by ``cutoff`` (from the expiry
        index, read with certlocker's own token: callers re-read each with theirs)."""
        return self._reads.expiring_refs(cutoff, environment, service)

    def wait_settled(self, ref: CertificateRef, future: cf.Future[CertificateStatus],
                     settled: Callable[[CertificateStatus], bool],
                     timeout: float) -> CertificateStatus | None:
        """Wait up to ``timeout`` seconds for our issuance, then, if another worker or
        replica holds the certificate's lease, for the status it writes to satisfy
        ``settled``. Returns the last status seen."""
        return self._queue.wait_settled(ref, future, settled, timeout)

    # -- the work (certlocker's own token) ---------------------------------------------
    def schedule(self, ref: CertificateRef, *, declared: bool = False,
                 first_lease: bool = False, hint: Hint | None = None,
                 ) -> cf.Future[CertificateStatus]:
        """Queue an issuance on this process's pool; ``declared``: one a declaration
        queued, with the due hint it filed. Either is decided again under the lease: the
        reconciler may have done the work already."""
        return self._queue.schedule(ref, declared=declared, first_lease=first_lease,
                                    hint=hint)

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
        return self._issuance.issue(ref, decide, first_lease=first_lease)

    def refresh_renewal_info(self, spec: CertificateSpec, status: CertificateStatus | None,
                             ) -> CertificateStatus | None:
        """Fetch the CA's renewal window (RFC 9773) for the current certificate when
        the last answer's Retry-After is over; the new status, or ``status`` unchanged.

        :raises Conflict: the status kept changing under us.
        """
        return renewal_info.refresh_status(self._store, self.issuers, spec, status,
                                           self._clock.now())

    def mark_invalid(self, spec: CertificateSpec) -> CertificateStatus:
        """Record that the stored spec does not parse (once per reason): its status says
        ``invalid`` with the reason; the certificate already served, if any, stays in
        ``current``. Nothing is ordered for it until the spec is fixed."""
        return self._setbacks.mark_invalid(spec)

    def update_status(self, ref: CertificateRef,
                      change: Callable[[CertificateStatus | None], CertificateStatus],
                      ) -> CertificateStatus:
        """Check-and-set read-modify-write of the status for other lifecycle steps
        (verification): ``change`` gets the stored status (or None) and may raise to abort.

        :raises Conflict: the status kept changing under us.
        """
        return update_status(self._store, ref, change)

    @property
    def issuers(self) -> Mapping[str, Issuer]:
        return self._issuance.issuers

    def shutdown(self) -> None:
        if self._wakeups is not None:
            self._wakeups.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._side.shutdown(wait=False, cancel_futures=True)
