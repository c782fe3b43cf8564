"""Pure decisions of the reconciler: does a certificate need work now, and when does it
next need the reconciler's attention (the time its due-index hint is filed under).

No I/O: callers pass the spec, the status and ``now``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from ...errors import InvalidInput
from ...models import CertificateSpec, CertificateStatus, KeyType, State
from . import alerts, reissue
from . import renewal_window

log = logging.getLogger(__name__)

INACTIVE = (State.REVOKED, State.RETIRED)
INVALID_SPEC = "invalid-spec"


def decide(spec: CertificateSpec, status: CertificateStatus | None,
           now: dt.datetime) -> reissue.Decision:
    """``reissue.needs_reissue`` with the facts a status record holds.

    A certificate with no status yet (its spec was written straight into Vault) is
    ``missing``. Revoked and retired certificates are never reissued, except a revoked one
    an operator asked to renew (the API has always issued it). A ``renew_before``
    that does not parse (possible in a spec written straight into Vault) falls back to
    the default renewal time rather than stopping the certificate's renewal.
    """
    for check in PRECHECKS:
        hit = check(spec, status)
        if hit is not None:
            return reissue.Decision(False, hit[0], message=hit[1])
    current = status.current if status else None
    issued_key_type = None
    issued_by = spec.issuer  # unknown in records older than issuer_name: skip the check
    if current is not None:
        if current.key_type:
            try:
                issued_key_type = KeyType(current.key_type)
            except ValueError:
                issued_key_type = None
        if current.issuer_name:
            issued_by = current.issuer_name
        if current.fallback_for == spec.issuer:
            # Issued by the spec issuer's fallback while it could not: not an issuer
            # change. The primary takes it back at the next normal renewal, not at once.
            issued_by = spec.issuer
    try:
        return reissue.needs_reissue(spec, current, now=now, issued_key_type=issued_key_type,
                                     issued_by=issued_by, status=status)
    except InvalidInput:
        log.warning("spec.renew_before_invalid", extra={"certificate": spec.ref.id})
        renewal_at = (renewal_window.plan(current, None, status, now).at
                      if current is not None else None)
        return reissue.needs_reissue(spec, current, now=now, issued_key_type=issued_key_type,
                                     issued_by=issued_by, status=status, renewal_at=renewal_at)


def inactive(spec: CertificateSpec, status: CertificateStatus | None) -> reissue.Hit:
    """Revoked and retired certificates are never reissued (unless ``_revived``)."""
    if status is None or status.state not in INACTIVE or _revived(spec, status):
        return None
    return status.state.value, f"never reissued: the certificate is {status.state.value}"


def invalid_spec(spec: CertificateSpec, status: CertificateStatus | None) -> reissue.Hit:
    """Never ordered: the stored record does not parse."""
    if spec.problem is None:
        return None
    return INVALID_SPEC, f"never ordered while the spec is invalid: {spec.problem}"


#: Asked before the reissue checks (``reissue.CHECKS``), in order; the first hit wins.
PRECHECKS: tuple[Callable[[CertificateSpec, CertificateStatus | None], reissue.Hit], ...] = (
    inactive, invalid_spec)


def _revived(spec: CertificateSpec, status: CertificateStatus) -> bool:
    """A revoked certificate an operator asked to renew, or whose ACME client placed a
    new order since (its key is the client's: only the client can replace it)."""
    if status.state is not State.REVOKED:
        return False
    current = status.current
    new_order = spec.acme_order is not None and (current is None
                                                 or current.acme_order != spec.acme_order)
    return status.renewal_request is not None or new_order


def next_action_at(spec: CertificateSpec, status: CertificateStatus | None,
                   now: dt.datetime,
                   policy: alerts.AlertPolicy = alerts.DEFAULT_POLICY) -> dt.datetime | None:
    """When the reconciler should next look at this certificate; None for never.

    Work needed now -> ``now``; in backoff -> ``next_attempt_at``; held for a maintenance
    window -> the window's next start; otherwise the renewal
    time, and when the CA's renewal window (RFC 9773) is to be fetched again. The
    moment the expiry floor is crossed (an alert; the larger failing floor while renewal
    is failing) is also a candidate, unless that alert was already sent. Never earlier than ``now``.
    """
    decision = decide(spec, status, now)
    if decision.needed:
        return now
    if status is None or decision.reason in (State.REVOKED.value, State.RETIRED.value,
                                             INVALID_SPEC):
        return None
    candidates: list[dt.datetime] = []
    if decision.reason == reissue.IN_BACKOFF and status.next_attempt_at is not None:
        candidates.append(status.next_attempt_at)
    if (decision.reason == reissue.OUTSIDE_MAINTENANCE_WINDOW
            and spec.window is not None):
        candidates.append(spec.window.next_start(now))  # issued as it opens
    current = status.current
    if current is not None:
        if decision.reason == reissue.UP_TO_DATE:
            try:
                candidates.append(renewal_window.plan(current, spec.renew_before, status,
                                                    now).at)
            except InvalidInput:
                candidates.append(renewal_window.plan(current, None, status, now).at)
            window = renewal_window.window_of(status)
            if window is not None:  # the CA may move its window: ask again then
                candidates.append(window.next_check_at)
        if status.alerted != alerts.EXPIRY_NEAR:
            floor = (alerts.failing_floor(current, policy) if alerts.renewal_failing(status)
                     else alerts.effective_floor(current, policy))
            floor_at = current.not_after - floor
            if floor_at > now:
                candidates.append(floor_at)
    if not candidates:
        return None
    return max(now, min(candidates))
