"""When to tell a human, and what to say: pure decisions over a certificate's status.

Retries go on quietly until ``backoff.exhausted`` says a human is needed: after
``max_attempts`` consecutive failures, or when the current certificate expires within
the floor whatever happened. The alert kind last sent is kept in the status
(``CertificateStatus.alerted``), so each kind is sent once per state change, not on
every reconcile pass; a successful issuance writes a fresh status and clears it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ...clock import rfc3339
from ...models import Alert as Alert  # the record lives in the domain: ports.AlertSink sends it
from ...models import CertificateInfo, CertificateRef, CertificateStatus
from .backoff import exhausted

RETRIES_EXHAUSTED = "retries-exhausted"
EXPIRY_NEAR = "expiry-near"
ISSUANCE_REFUSED = "issuance-refused"


@dataclasses.dataclass(frozen=True)
class AlertPolicy:
    max_attempts: int = 5
    expiry_floor: dt.timedelta = dt.timedelta(days=7)
    #: the floor never exceeds this fraction of the lifetime: a 6-day certificate is not
    #: "near expiry" from the moment it is issued.
    floor_lifetime_fraction: float = 0.1


DEFAULT_POLICY = AlertPolicy()


def effective_floor(current: CertificateInfo, policy: AlertPolicy) -> dt.timedelta:
    lifetime = current.not_after - current.not_before
    return min(policy.expiry_floor, lifetime * policy.floor_lifetime_fraction)


def evaluate(status: CertificateStatus | None, now: dt.datetime,
             policy: AlertPolicy = DEFAULT_POLICY) -> str | None:
    """The alert this status calls for, or None. Exhausted retries win over expiry; a
    refusal that is not retried (``status.retryable`` False) is told at once, and is
    outranked by expiry, which it never reaches by retrying."""
    if status is None:
        return None
    current = status.current
    if not status.retryable and status.last_error:
        if current is not None and current.not_after - now <= effective_floor(current,
                                                                               policy):
            return EXPIRY_NEAR
        return ISSUANCE_REFUSED
    if status.attempts >= policy.max_attempts:
        return RETRIES_EXHAUSTED
    if current is not None and exhausted(status.attempts, now, current.not_after,
                                         policy.max_attempts, effective_floor(current, policy)):
        return EXPIRY_NEAR
    return None


def should_send(status: CertificateStatus | None, now: dt.datetime,
                policy: AlertPolicy = DEFAULT_POLICY) -> str | None:
    """The alert to send now: one that is called for and differs from the last one sent."""
    kind = evaluate(status, now, policy)
    if kind is None or status is None or status.alerted == kind:
        return None
    return kind


def build(ref: CertificateRef, status: CertificateStatus, kind: str,
          now: dt.datetime) -> Alert:
    not_after = status.current.not_after if status.current else None
    if kind == RETRIES_EXHAUSTED:
        summary = (f"certlocker: {ref.id} failed {status.attempts} issuance attempts in a "
                   f"row; retries continue")
    elif kind == ISSUANCE_REFUSED:
        summary = (f"certlocker: issuance of {ref.id} was refused and is not retried; fix "
                   f"the cause, then renew it")
    else:
        summary = f"certlocker: {ref.id} expires at {rfc3339(not_after) if not_after else '?'}"
    if status.last_error:
        summary += f"; last error: {status.last_error[:300]}"
    return Alert(certificate=ref.id, kind=kind, summary=summary, attempts=status.attempts,
                 last_error=status.last_error, not_after=not_after,
                 next_attempt_at=status.next_attempt_at, at=now)


def policy_from_settings(settings: Any) -> AlertPolicy:
    """``alert_max_attempts`` and ``alert_expiry_floor_seconds`` of a ``Settings``."""
    return AlertPolicy(max_attempts=settings.alert_max_attempts,
                       expiry_floor=dt.timedelta(seconds=settings.alert_expiry_floor_seconds))
