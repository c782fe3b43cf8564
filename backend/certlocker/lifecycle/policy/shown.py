"""What a certificate's status shows at a given moment, derived from facts.

The stored ``state`` says what certlocker last did (issued, failed a first issuance,
revoked); it cannot change by itself when time passes. What operators, filters, the
dashboard and metrics see must still be true *now*: a certificate past its ``not_after``
is ``expired`` whatever was stored, and one whose last issuance attempt failed is
failing even while its current certificate is still valid. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt

from ...models import CertificateStatus, State

#: stored states that only describe the certificate while it is in date
_DATED = (State.PENDING, State.ISSUING, State.VALID, State.FAILED)


def shown_state(status: CertificateStatus, now: dt.datetime) -> State:
    """``expired`` once ``now`` is at or past the current certificate's ``not_after``
    (revoked and retired certificates keep saying so); else the stored state."""
    current = status.current
    if current is not None and now >= current.not_after and status.state in _DATED:
        return State.EXPIRED
    return status.state


def renewal_failing(status: CertificateStatus) -> bool:
    """The last issuance attempt (first issuance or renewal) failed and certlocker is
    still trying: a success writes a status without ``last_error``."""
    return status.last_error is not None and status.state is not State.RETIRED


def failing(status: CertificateStatus) -> bool:
    """What ``?status=failed`` and the dashboard's failing list select."""
    return status.state is State.FAILED or renewal_failing(status)


def remaining_validity(status: CertificateStatus, now: dt.datetime) -> dt.timedelta | None:
    """Time left until the current certificate's ``not_after`` (zero once past)."""
    if status.current is None:
        return None
    return max(dt.timedelta(0), status.current.not_after - now)


def matches_state(status: CertificateStatus, wanted: State, now: dt.datetime) -> bool:
    """The ``?status=`` filter: ``failed`` selects every failing certificate, including
    one whose current certificate is still valid or already expired; any other value
    selects on the shown state."""
    if wanted is State.FAILED:
        return failing(status)
    return shown_state(status, now) is wanted
