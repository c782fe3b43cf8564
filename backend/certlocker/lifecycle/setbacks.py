"""What a certificate's status says when it cannot be issued: a failed attempt (retried
after a backoff, or refused for good) or a stored spec that does not parse."""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Callable

from .. import cas
from ..audit.recorder import Auditor, audited
from ..clock import Clock
from ..errors import (CertlockerError, IssuanceDeferred, IssuanceFailed, NamesRefused,
                      RateLimited)
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State
from .policy import backoff
from .ports import Store
from .records.status_writes import update_status

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = dt.timedelta(days=90)  # backoff scale before a first certificate


class Setbacks:
    """``fail`` and ``mark_invalid``: the status writes of an issuance that did not
    happen, with their audit event and log line."""

    def __init__(self, store: Store, clock: Clock, audit: Auditor, actor: str,
                 policy: backoff.BackoffPolicy, rng: random.Random, *,
                 on_deferred: Callable[[CertificateRef, dt.datetime], None] | None = None,
                 ) -> None:
        """``on_deferred(ref, until)``: told of each deferral once it is recorded (the
        ``Wakeups`` that bring it back at its slot)."""
        self._store = store
        self._on_deferred = on_deferred
        self._clock = clock
        self._audit = audit
        self._actor = actor
        self._policy = policy
        self._rng = rng

    def fail(self, ref: CertificateRef, exc: CertlockerError, *,
             acme_order: str | None = None) -> CertificateStatus:
        """Record a failed attempt. A retryable one is tried again after a backoff; one
        the CA or a check refused for good (``IssuanceFailed.retryable`` False: a CAA
        record, a rejected identifier) is not retried until an operator asks (renew) or
        the certificate is declared again, so no retry storm and no retries-exhausted
        alert for what retrying cannot fix.

        ``acme_order``: the attempt was for this order of certlocker's ACME server (the
        client's CSR). That order ends invalid with this error, now, while its client
        may still be polling, and no later attempt issues for it: a certificate issued
        minutes later for an order its client saw fail would be one nobody installs.
        The client's next order (a new finalize) is tried at once."""
        now = self._clock.now()
        if isinstance(exc, IssuanceDeferred):
            return self.defer(ref, exc)
        retryable = not isinstance(exc, IssuanceFailed) or exc.retryable

        def update(old: CertificateStatus | None) -> CertificateStatus:
            attempts = (old.attempts if old else 0) + 1
            base = old or CertificateStatus(State.PENDING)
            # The current certificate (if any) is still the one served: VALID, not ISSUING;
            # a revoked one stays REVOKED until its replacement is stored.
            state = (State.REFUSED if isinstance(exc, NamesRefused) else
                     State.FAILED if base.current is None else
                     State.REVOKED if base.state is State.REVOKED else State.VALID)
            failed = base.replace(state=state, last_error=exc.detail, attempts=attempts,
                                  updated_at=now, retryable=retryable, waiting=None,
                                  failed_acme_order=acme_order or base.failed_acme_order)
            if not retryable or acme_order:  # waits for a renew, a declaration, an order
                return failed.replace(next_attempt_at=None)
            return failed.replace(next_attempt_at=self._next_attempt(base, attempts, now,
                                                                     exc))

        log.warning("issuance.failed", extra={"certificate": ref.id, "error": exc.detail,
                                              "retryable": retryable,
                                              **({"acme_order": acme_order} if acme_order
                                                 else {})})
        audited(self._audit, self._actor, "certificate.issue", ref.id, "failure",
                reason=exc.detail[:500])
        return update_status(self._store, ref, update)

    def defer(self, ref: CertificateRef, exc: IssuanceDeferred) -> CertificateStatus:
        """Schedule the certificate for the slot its issuer's rate limits give it: not a
        failure (no attempt counted, no error, no alert), so a mass replacement past the
        limits is spread out with the time each certificate will be issued."""
        now = self._clock.now()
        until: dt.datetime = exc.until

        def update(old: CertificateStatus | None) -> CertificateStatus:
            base = old or CertificateStatus(State.PENDING)
            state = (State.PENDING if base.current is None else
                     State.REVOKED if base.state is State.REVOKED else State.VALID)
            return base.replace(state=state, next_attempt_at=until, updated_at=now,
                                waiting=f"a slot in issuer {exc.issuer}'s rate limits",
                                retryable=True)

        log.info("issuance.deferred", extra={"certificate": ref.id, "issuer": exc.issuer,
                                             "until": until.isoformat()})
        audited(self._audit, self._actor, "certificate.schedule", ref.id, "success",
                details={"issuer": exc.issuer, "until": until.isoformat()})
        status = update_status(self._store, ref, update)
        if self._on_deferred is not None:
            self._on_deferred(ref, until)
        return status

    def _next_attempt(self, base: CertificateStatus, attempts: int, now: dt.datetime,
                      exc: CertlockerError) -> dt.datetime:
        """The backoff scales with the certificate's lifetime and fits in the validity it
        has left (``backoff.next_attempt``); the CA's Retry-After wins."""
        lifetime = (base.current.not_after - base.current.not_before if base.current
                    else DEFAULT_LIFETIME)
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        return backoff.next_attempt(attempts, now, lifetime, self._rng,
                                    retry_after=retry_after, policy=self._policy,
                                    not_after=base.current.not_after if base.current
                                    else None)

    def mark_invalid(self, spec: CertificateSpec) -> CertificateStatus:
        """Record that the stored spec does not parse (once per reason): its status says
        ``invalid`` with the reason; the certificate already served, if any, stays in
        ``current``. Nothing is ordered for it until the spec is fixed."""
        assert spec.problem is not None
        problem = spec.problem
        written: list[bool] = []

        def update(old: CertificateStatus | None) -> CertificateStatus:
            base = old or CertificateStatus(State.PENDING)
            written.clear()
            if base.state is State.INVALID and base.last_error == problem:
                raise cas.Unchanged(base)
            written.append(True)
            return base.replace(state=State.INVALID, last_error=problem,
                                next_attempt_at=None, updated_at=self._clock.now())

        status = update_status(self._store, spec.ref, update)
        if not written:
            return status
        log.warning("spec.invalid", extra={"certificate": spec.ref.id,
                                           "error": problem[:300]})
        audited(self._audit, self._actor, "spec.invalid", spec.ref.id, "failure",
                reason=problem[:500])
        return status
