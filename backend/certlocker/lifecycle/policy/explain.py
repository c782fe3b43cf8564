"""When a certificate is next renewed, and why, in words an operator can act on.

The dashboard's certificate page answers "when will this renew?" from the same pure
decisions the reconciler takes (``planning.decide``, ``renewal_window.plan``), so what a
person reads is what will happen. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from ...errors import InvalidInput
from ...models import CertificateSpec, CertificateStatus, State
from . import planning, reissue
from . import renewal_window

_TRIGGERS: dict[str, str] = {
    reissue.MISSING: "no certificate has been issued yet",
    reissue.NAMES_CHANGED: "the spec's DNS names differ from the certificate's",
    reissue.KEY_TYPE_CHANGED: "the spec asks for another key type",
    reissue.ISSUER_CHANGED: "the spec names another issuer",
    reissue.PROFILE_CHANGED: "the spec asks for another ACME profile",
    reissue.EXPIRED: "the certificate has expired",
    reissue.RENEWAL_DUE: "its renewal time has come",
}


@dataclasses.dataclass(frozen=True)
class NextRenewal:
    """``at`` is None when no renewal is planned (retired, revoked, refused, invalid)."""

    at: dt.datetime | None
    why: str
    #: the decision's reason (``reissue.Reason`` or a precheck's: ``retired`` ...)
    reason: str = ""


def next_renewal(spec: CertificateSpec, status: CertificateStatus | None,
                 now: dt.datetime) -> NextRenewal:
    decision = planning.decide(spec, status, now)
    return dataclasses.replace(_explain(spec, status, now, decision), reason=decision.reason)


def _explain(spec: CertificateSpec, status: CertificateStatus | None, now: dt.datetime,
             decision: reissue.Decision) -> NextRenewal:
    trigger = _TRIGGERS.get(decision.trigger or decision.reason, decision.trigger or "")
    if decision.needed:
        return NextRenewal(now, f"now: {trigger}" + (f"; {decision.override}"
                                                      if decision.override else ""))
    if decision.reason in (State.REVOKED.value, State.RETIRED.value):
        return NextRenewal(None, f"never: the certificate is {decision.reason}")
    if decision.reason == planning.INVALID_SPEC:
        return NextRenewal(None, f"never while the spec is invalid: {spec.problem}")
    assert status is not None  # a missing status is "missing", needed above
    if decision.reason == reissue.REFUSED:
        return NextRenewal(None, f"not retried: the last attempt was refused "
                                 f"({status.last_error}); {trigger}. Fix the cause, then "
                                 "renew it")
    if decision.reason == reissue.IN_BACKOFF:
        return NextRenewal(status.next_attempt_at,
                           f"retry after {status.attempts} failed attempt(s) "
                           f"({status.last_error}); {trigger}")
    if (decision.reason == reissue.OUTSIDE_MAINTENANCE_WINDOW
            and spec.window is not None):
        return NextRenewal(spec.window.next_start(now),
                           f"{decision.reason}: {decision.message}")
    current = status.current
    if current is None:
        return NextRenewal(None, "no certificate issued yet")
    try:
        plan = renewal_window.plan(current, spec.renew_before, status, now)
    except InvalidInput:
        plan = renewal_window.plan(current, None, status, now)
    return NextRenewal(plan.at, _source(plan.source, spec, status))


def _source(source: str, spec: CertificateSpec, status: CertificateStatus) -> str:
    window = renewal_window.window_of(status)
    if source == "renew-before":
        return f"renew_before {spec.renew_before} before expiry (the spec's policy)"
    if source == "renew-before-clamped":
        return (f"renew_before {spec.renew_before} is longer than the certificate's "
                "lifetime: the default applies (one third of its lifetime left)")
    if source == "ari" and window is not None:
        return (f"a moment inside the CA's suggested renewal window (ARI, RFC 9773) "
                f"{window.start:%Y-%m-%d %H:%M} to {window.end:%Y-%m-%d %H:%M} UTC")
    if source == "ari-past":
        return "now: the CA's suggested renewal window (ARI) has passed"
    return "when one third of its lifetime is left (the default policy)"
