"""The CA's renewal window (ACME Renewal Information, RFC 9773) in the renewal plan: the
stored window of the current certificate, the plan it yields, and when to ask the CA
again. Pure: ``renewal_info`` fetches the window and stores it.
"""

from __future__ import annotations

import datetime as dt
import random

from ...models import AriWindow, CertificateInfo, CertificateStatus, RenewalWindow
from .renewal import RenewalPlan, plan_renewal

DEFAULT_RECHECK = dt.timedelta(hours=6)  # RFC 9773 section 4.3.2's suggestion
MIN_RECHECK = dt.timedelta(hours=1)
MAX_RECHECK = dt.timedelta(days=1)


def window_of(status: CertificateStatus | None) -> AriWindow | None:
    """The stored window, if it is for the current certificate."""
    if status is None or status.ari is None or status.current is None:
        return None
    return status.ari if status.ari.serial == status.current.serial else None


def plan(current: CertificateInfo, renew_before: str | None,
         status: CertificateStatus | None, now: dt.datetime) -> RenewalPlan:
    """``renewal.plan_renewal`` with the stored CA window. The moment inside the window
    is drawn from a generator seeded by the certificate and the window, so every
    replica and every pass picks the same one.

    :raises InvalidInput: as ``plan_renewal``.
    """
    window = window_of(status)
    if window is None:
        return plan_renewal(current.not_before, current.not_after, renew_before=renew_before)
    rng = random.Random(f"{current.sha256_fingerprint}|{window.start}|{window.end}")
    return plan_renewal(current.not_before, current.not_after, renew_before=renew_before,
                        ari_window=(window.start, window.end),
                        ari_explanation_url=window.explanation_url, now=now, rng=rng)


def check_due(status: CertificateStatus | None, now: dt.datetime) -> bool:
    """Whether to ask the CA for the current certificate's window now: it is unexpired
    (RFC 9773 section 4.3: never after expiry) and the last answer's Retry-After is over."""
    if status is None or status.current is None or status.current.not_after <= now:
        return False
    window = window_of(status)
    return window is None or window.next_check_at <= now


def record(serial: str, window: RenewalWindow, now: dt.datetime) -> AriWindow:
    """What the status keeps of a CA's answer; the CA's Retry-After clamped to between
    an hour and a day."""
    wait = min(max(window.retry_after or DEFAULT_RECHECK, MIN_RECHECK), MAX_RECHECK)
    return AriWindow(serial=serial, start=window.start, end=window.end, checked_at=now,
                     next_check_at=now + wait, explanation_url=window.explanation_url)
