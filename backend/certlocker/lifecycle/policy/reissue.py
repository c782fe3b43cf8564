""""Does this certificate need (re)issuing?" as a chain of named checks.

Modelled on cert-manager's readiness/trigger policy chain: each check looks at one
thing and either answers ``(reason, message)`` or passes (None); the first hit wins
(``first_hit``) and is what operators see, the message saying why in their words. The
triggers (``CHECKS``), in order:

``missing``           no certificate has been issued
``names-changed``     the spec's DNS names differ (as a set, case-insensitively) from the
                      certificate's
``key-type-changed``  the spec asks for another key type than the certificate was issued
                      with (skipped when that key type is unknown)
``issuer-changed``    the spec names another issuer than the one that issued it
``profile-changed``   the spec asks for another ACME profile than it did at issuance
                      (skipped for certificates issued before the profile was recorded)
``expired``           ``now`` is at or past ``not_after``
``renewal-due``       ``now`` is at or past the renewal time
``renewal-requested`` an operator forced a renewal (``status.renewal_request``) that no
                      certificate stored since has answered

A certificate ordered through certlocker's ACME server (``spec.acme_order``: the key is
the client's) has one trigger instead (``ACME_CHECKS``): ``acme-order``, an order whose
certificate is not stored yet and whose issuance has not failed (a failed order ended
invalid; its client places a new one). Its client renews it, with a new order:
certlocker serves the renewal time, and any renewal an operator asks for, as the ARI
window.

Two gates (``GATES``) hold back any trigger, in this order, and a third holds back the
triggers that rotate a certificate still being served (``WINDOWED``): outside the spec's
maintenance window (``maintenance.hold``) the answer is ``Decision(False,
"outside-maintenance-window", trigger=...)`` until the window opens, unless waiting for
it would leave less than half the renewal slack (the override: issued at once, the
message says why). ``missing``, ``expired`` and ``acme-order`` are never held: nothing
valid is served, or the client chose the moment. A failure that retrying
cannot fix (``status.retryable`` False: a CAA refusal, a rejected identifier) gives
``Decision(False, "refused", trigger=...)`` until an operator renews or redeclares.
Backoff: after a failure, ``status.next_attempt_at`` in the future gives
``Decision(False, "in-backoff", trigger=...)``, so a failing certificate is not retried
on every reconcile pass, not even an expired one (hammering a CA that refuses us does
not help, and the alert comes from ``backoff.exhausted``). A spec PATCH clears both
and a rewrite the spec watch sees clears the backoff, so a fix is tried at once.
With no trigger the answer is ``up-to-date``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Callable

from ... import maintenance
from ...models import CertificateInfo, CertificateSpec, CertificateStatus, KeyType
from . import renewal_window

class Reason(enum.StrEnum):
    """Why a certificate is (not) reissued: the first check that fired (shown, logged)."""

    MISSING = "missing"
    NAMES_CHANGED = "names-changed"
    KEY_TYPE_CHANGED = "key-type-changed"
    ISSUER_CHANGED = "issuer-changed"
    PROFILE_CHANGED = "profile-changed"
    EXPIRED = "expired"
    RENEWAL_DUE = "renewal-due"
    RENEWAL_REQUESTED = "renewal-requested"
    ACME_ORDER = "acme-order"
    IN_BACKOFF = "in-backoff"
    REFUSED = "refused"
    OUTSIDE_MAINTENANCE_WINDOW = "outside-maintenance-window"
    UP_TO_DATE = "up-to-date"


MISSING, NAMES_CHANGED = Reason.MISSING, Reason.NAMES_CHANGED
KEY_TYPE_CHANGED, ISSUER_CHANGED = Reason.KEY_TYPE_CHANGED, Reason.ISSUER_CHANGED
PROFILE_CHANGED = Reason.PROFILE_CHANGED
EXPIRED, RENEWAL_DUE = Reason.EXPIRED, Reason.RENEWAL_DUE
RENEWAL_REQUESTED, IN_BACKOFF = Reason.RENEWAL_REQUESTED, Reason.IN_BACKOFF
REFUSED, UP_TO_DATE = Reason.REFUSED, Reason.UP_TO_DATE
OUTSIDE_MAINTENANCE_WINDOW = Reason.OUTSIDE_MAINTENANCE_WINDOW


@dataclasses.dataclass(frozen=True)
class Decision:
    """``reason`` is the first check that fired; for ``in-backoff`` and ``refused``,
    ``trigger`` is the check that would have fired without the gate. ``message`` says
    the same in words an operator can act on (not part of equality: the reason decides)."""

    needed: bool
    reason: str
    trigger: str | None = None
    message: str = dataclasses.field(default="", compare=False)
    #: set when a maintenance window was overridden (expiry too close to wait): why
    override: str | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class Facts:
    """Everything the checks look at, gathered once."""

    spec: CertificateSpec
    current: CertificateInfo | None
    issued_key_type: KeyType | None
    issued_by: str | None
    now: dt.datetime
    renewal_at: dt.datetime | None
    renewal_requested: bool = False
    status: CertificateStatus | None = None


#: A check's answer: ``(reason, message)`` when it fires, None to pass.
Hit = tuple[str, str] | None
Check = Callable[[Facts], Hit]


def missing(f: Facts) -> Hit:
    return (MISSING, "no certificate has been issued yet") if f.current is None else None


def names_changed(f: Facts) -> Hit:
    if f.current is None or _name_set(f.spec.dns_names) == _name_set(f.current.dns_names):
        return None
    return (NAMES_CHANGED, f"the spec's DNS names ({', '.join(f.spec.dns_names)}) differ "
                           f"from the certificate's ({', '.join(f.current.dns_names)})")


def key_type_changed(f: Facts) -> Hit:
    if f.issued_key_type is None or f.issued_key_type == f.spec.key_type:
        return None
    return (KEY_TYPE_CHANGED, f"the spec asks for key type {f.spec.key_type.value}; the "
                              f"certificate has {f.issued_key_type.value}")


def issuer_changed(f: Facts) -> Hit:
    if f.issued_by is None or f.issued_by == f.spec.issuer:
        return None
    return (ISSUER_CHANGED, f"the spec names issuer {f.spec.issuer!r}; the certificate "
                            f"was issued by {f.issued_by!r}")


def profile_changed(f: Facts) -> Hit:
    asked = f.current.profile if f.current is not None else None
    if asked is None or asked == (f.spec.profile or ""):
        return None
    return (PROFILE_CHANGED, f"the spec asks for {_profile(f.spec.profile)}; the "
                             f"certificate was issued for {_profile(asked)}")


def _profile(name: str | None) -> str:
    return f"profile {name!r}" if name else "no profile"


def expired(f: Facts) -> Hit:
    if f.current is None or f.now < f.current.not_after:
        return None
    return (EXPIRED, f"the certificate expired at {f.current.not_after:%Y-%m-%d %H:%M} UTC")


def renewal_due(f: Facts) -> Hit:
    if f.renewal_at is None or f.now < f.renewal_at:
        return None
    return (RENEWAL_DUE, f"its renewal time ({f.renewal_at:%Y-%m-%d %H:%M} UTC) has come")


def renewal_requested(f: Facts) -> Hit:
    if not f.renewal_requested:
        return None
    by = f.status.renewal_request.by if f.status and f.status.renewal_request else None
    return (RENEWAL_REQUESTED, f"{by or 'an operator'} asked for a renewal")


#: The triggers, in the documented order.
CHECKS: tuple[Check, ...] = (missing, names_changed, key_type_changed, issuer_changed,
                             profile_changed, expired, renewal_due, renewal_requested)


def acme_order(f: Facts) -> Hit:
    """An order whose certificate is not stored yet, unless its issuance failed (the
    order ended invalid: its client orders again)."""
    order = f.spec.acme_order
    if order is None or (f.current is not None and f.current.acme_order == order):
        return None
    if f.status is not None and f.status.failed_acme_order == order:
        return None
    return (Reason.ACME_ORDER, f"ACME order {order} awaits its certificate")


#: The trigger of a certificate whose ACME client renews it.
ACME_CHECKS: tuple[Check, ...] = (acme_order,)


def refused(f: Facts) -> Hit:
    if f.status is None or f.status.retryable:
        return None
    return (REFUSED, f"not retried: the last attempt was refused ({f.status.last_error}); "
                     "an operator's renewal or a new declaration retries it")


def in_backoff(f: Facts) -> Hit:
    at = f.status.next_attempt_at if f.status is not None else None
    if at is None or at <= f.now:
        return None
    assert f.status is not None
    if f.status.waiting:
        return (IN_BACKOFF, f"scheduled for {at:%Y-%m-%d %H:%M:%S} UTC: waiting for "
                            f"{f.status.waiting}")
    return (IN_BACKOFF, f"retried at {at:%Y-%m-%d %H:%M} UTC after {f.status.attempts} "
                        f"failed attempt(s) ({f.status.last_error})")


#: What holds a fired trigger back, in order.
GATES: tuple[Check, ...] = (refused, in_backoff)

#: The triggers a maintenance window holds back: rotations of a certificate that is
#: still valid and served.
WINDOWED = (NAMES_CHANGED, KEY_TYPE_CHANGED, ISSUER_CHANGED, PROFILE_CHANGED, RENEWAL_DUE,
            RENEWAL_REQUESTED)


def maintenance_hold(f: Facts, trigger: str) -> maintenance.Hold:
    """Whether the spec's maintenance window holds ``trigger`` back now."""
    if trigger not in WINDOWED or f.current is None:
        return maintenance.Hold(False, None, "not a rotation")
    return maintenance.hold(f.spec.window, f.now, f.current.not_after,
                            f.renewal_at)


def first_hit(checks: tuple[Check, ...], facts: Facts) -> Hit:
    """The first check of ``checks`` that fires; the rest are not asked."""
    for check in checks:
        hit = check(facts)
        if hit is not None:
            return hit
    return None


def needs_reissue(
    spec: CertificateSpec,
    current: CertificateInfo | None,
    *,
    now: dt.datetime,
    issued_key_type: KeyType | None = None,
    issued_by: str | None = None,
    status: CertificateStatus | None = None,
    renewal_at: dt.datetime | None = None,
) -> Decision:
    """Run the checks in order; see the module docstring.

    ``issued_by`` defaults to ``current.issuer``. ``renewal_at`` defaults to
    ``renewal_window.plan`` of the current certificate with the spec's ``renew_before``
    and the CA's renewal window stored in ``status`` (RFC 9773), if any.

    :raises InvalidInput: if the spec's ``renew_before`` does not parse and
        ``renewal_at`` is not given.
    """
    if current is not None:
        if issued_by is None:
            issued_by = current.issuer
        if renewal_at is None:
            renewal_at = renewal_window.plan(current, spec.renew_before, status, now).at
    facts = Facts(spec, current, issued_key_type, issued_by, now, renewal_at,
                  status is not None and status.renewal_request is not None, status)
    trigger = first_hit(ACME_CHECKS if spec.acme_order else CHECKS, facts)
    if trigger is None:
        return Decision(False, UP_TO_DATE, message="up to date" if not spec.acme_order
                        else "up to date: its ACME client renews it (certlocker serves "
                             "the renewal window over ARI)")
    gate = first_hit(GATES, facts)
    if gate is not None:
        return Decision(False, gate[0], trigger=trigger[0],
                        message=f"{gate[1]}; {trigger[1]}")
    held = maintenance_hold(facts, trigger[0])
    if held.wait:
        return Decision(False, OUTSIDE_MAINTENANCE_WINDOW, trigger=trigger[0],
                        message=f"{held.why}; {trigger[1]}")
    if held.until is not None:  # outside the window, overridden: say so
        return Decision(True, trigger[0], message=f"{trigger[1]}; {held.why}",
                        override=held.why)
    return Decision(True, trigger[0], message=trigger[1])


def _name_set(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.strip().rstrip(".").lower() for n in names)
