"""When to tell a human, and what to say: pure decisions over a certificate's status.

Retries go on quietly until ``backoff.exhausted`` says a human is needed: after
``max_attempts`` consecutive failures, or when the current certificate expires within
the floor whatever happened. The floor is the smaller of ``expiry_floor`` and a tenth
of the lifetime (a 6-day certificate is not "near expiry" when it is issued), so for a
short certificate it is also given a second, larger one while renewal is *failing*:
``failing_floor`` (48 h by default, ``alert_failing_floor_seconds``). A 6-day
certificate whose renewal fails is told with (just under, when renewal starts at the
default day 4) 48 h left, however few attempts it has made; one renewed earlier
(``renew_before`` over 48 h) is told when it crosses 48 h left still failing. The
alert kind last sent is kept in the status
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
    #: while renewal is failing, alert once less than this much validity is left, however
    #: short the lifetime: the time a human needs to fix a renewal (a weekend).
    failing_floor: dt.timedelta = dt.timedelta(hours=48)


DEFAULT_POLICY = AlertPolicy()


def effective_floor(current: CertificateInfo, policy: AlertPolicy) -> dt.timedelta:
    """Expiry closer than this alerts whatever happened (the safety net)."""
    lifetime = current.not_after - current.not_before
    return min(policy.expiry_floor, lifetime * policy.floor_lifetime_fraction)


def failing_floor(current: CertificateInfo, policy: AlertPolicy) -> dt.timedelta:
    """Expiry closer than this alerts while renewal is failing: ``max(failing_floor,
    effective_floor)``, so it only ever adds to the safety net (for a 6-day certificate
    48 h instead of 14.4 h; a 90-day one keeps its 7 days)."""
    return max(policy.failing_floor, effective_floor(current, policy))


def renewal_failing(status: CertificateStatus) -> bool:
    """At least one attempt to replace the current certificate has failed since the
    last success (a success writes a fresh status with no attempts)."""
    return status.attempts > 0 and status.last_error is not None


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
    if (current is not None and renewal_failing(status)
            and current.not_after - now <= failing_floor(current, policy)):
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
    """``alert_max_attempts``, ``alert_expiry_floor_seconds`` and
    ``alert_failing_floor_seconds`` of a ``Settings``."""
    return AlertPolicy(max_attempts=settings.alert_max_attempts,
                       expiry_floor=dt.timedelta(seconds=settings.alert_expiry_floor_seconds),
                       failing_floor=dt.timedelta(
                           seconds=settings.alert_failing_floor_seconds))
