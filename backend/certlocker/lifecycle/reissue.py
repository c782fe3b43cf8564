""""Does this certificate need (re)issuing?" as a chain of named checks.

Modelled on cert-manager's readiness/trigger policy chain: each check looks at one
thing and either names a reason or passes; the first reason wins and is what operators
see. The triggers, in order:

``missing``           no certificate has been issued
``names-changed``     the spec's DNS names differ (as a set, case-insensitively) from the
                      certificate's
``key-type-changed``  the spec asks for another key type than the certificate was issued
                      with (skipped when that key type is unknown)
``issuer-changed``    the spec names another issuer than the one that issued it
``expired``           ``now`` is at or past ``not_after``
``renewal-due``       ``now`` is at or past the renewal time
``renewal-requested`` an operator forced a renewal (``status.renewal_request``) that no
                      certificate stored since has answered

Backoff gates every trigger: after a failure, ``status.next_attempt_at`` in the future
turns any trigger into ``Decision(False, "in-backoff", trigger=...)``, so a failing
certificate is not retried on every reconcile pass, not even an expired one (hammering a
CA that refuses us does not help, and the alert comes from ``backoff.exhausted``). The
reconciler should clear ``next_attempt_at`` when an operator edits the spec, so a fix
is tried at once. A failure that retrying cannot fix (``status.retryable`` False: a CAA
refusal, a rejected identifier) gates every trigger the same way with no end:
``Decision(False, "refused", trigger=...)`` until an operator renews or redeclares.
With no trigger the answer is ``up-to-date``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable

from ..models import CertificateInfo, CertificateSpec, CertificateStatus, KeyType
from . import renewal_info

MISSING = "missing"
NAMES_CHANGED = "names-changed"
KEY_TYPE_CHANGED = "key-type-changed"
ISSUER_CHANGED = "issuer-changed"
EXPIRED = "expired"
RENEWAL_DUE = "renewal-due"
RENEWAL_REQUESTED = "renewal-requested"
IN_BACKOFF = "in-backoff"
REFUSED = "refused"
UP_TO_DATE = "up-to-date"


@dataclasses.dataclass(frozen=True)
class Decision:
    """``reason`` is the first check that fired; for ``in-backoff``, ``trigger`` is the
    check that would have fired without the backoff."""

    needed: bool
    reason: str
    trigger: str | None = None


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


Check = Callable[[Facts], bool]


def _missing(f: Facts) -> bool:
    return f.current is None


def _names_changed(f: Facts) -> bool:
    return (f.current is not None
            and _name_set(f.spec.dns_names) != _name_set(f.current.dns_names))


def _key_type_changed(f: Facts) -> bool:
    return f.issued_key_type is not None and f.issued_key_type != f.spec.key_type


def _issuer_changed(f: Facts) -> bool:
    return f.issued_by is not None and f.issued_by != f.spec.issuer


def _expired(f: Facts) -> bool:
    return f.current is not None and f.now >= f.current.not_after


def _renewal_due(f: Facts) -> bool:
    return f.renewal_at is not None and f.now >= f.renewal_at


def _renewal_requested(f: Facts) -> bool:
    return f.renewal_requested


CHECKS: tuple[tuple[str, Check], ...] = (
    (MISSING, _missing),
    (NAMES_CHANGED, _names_changed),
    (KEY_TYPE_CHANGED, _key_type_changed),
    (ISSUER_CHANGED, _issuer_changed),
    (EXPIRED, _expired),
    (RENEWAL_DUE, _renewal_due),
    (RENEWAL_REQUESTED, _renewal_requested),
)


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
    ``renewal_info.plan`` of the current certificate with the spec's ``renew_before``
    and the CA's renewal window stored in ``status`` (RFC 9773), if any.

    :raises InvalidInput: if the spec's ``renew_before`` does not parse and
        ``renewal_at`` is not given.
    """
    if current is not None:
        if issued_by is None:
            issued_by = current.issuer
        if renewal_at is None:
            renewal_at = renewal_info.plan(current, spec.renew_before, status, now).at
    facts = Facts(spec, current, issued_key_type, issued_by, now, renewal_at,
                  status is not None and status.renewal_request is not None)
    trigger = next((name for name, check in CHECKS if check(facts)), None)
    if trigger is None:
        return Decision(False, UP_TO_DATE)
    if status is not None and not status.retryable:
        return Decision(False, REFUSED, trigger=trigger)
    if status is not None and status.next_attempt_at is not None \
            and status.next_attempt_at > now:
        return Decision(False, IN_BACKOFF, trigger=trigger)
    return Decision(True, trigger)


def _name_set(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n.strip().rstrip(".").lower() for n in names)
