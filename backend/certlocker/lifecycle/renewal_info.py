"""ACME Renewal Information (RFC 9773) in the lifecycle: which certificate a renewal
replaces, the CA's suggested window in the status, and the renewal plan it yields.

The pure part (``window_of``, ``plan``, ``check_due``, ``record``) decides; ``replaces_for``
and ``fetch`` read the stored public leaf and ask the issuer. ARI is advisory: nothing
here raises because a CA cannot be asked.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from typing import Mapping

from ..errors import CertlockerError
from ..issuance import ari
from ..models import (AriWindow, CertificateInfo, CertificateRef, CertificateSpec,
                      CertificateStatus, RenewalWindow)
from ..ports import Issuer, RenewalInfoSource, Store
from .renewal import RenewalPlan, plan_renewal
from .status_writes import update_status

log = logging.getLogger(__name__)

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


def fetch(issuer: object, serial: str, certificate_pem: str,
          now: dt.datetime) -> AriWindow | None:
    """Ask ``issuer`` (if it speaks ARI) for this certificate's window."""
    if not isinstance(issuer, RenewalInfoSource):
        return None
    window = issuer.renewal_info(certificate_pem)
    return record(serial, window, now) if window is not None else None


def stored_leaf(store: Store, ref: CertificateRef, serial: str) -> str | None:
    """The public leaf certlocker stored for ``ref``, if it is certificate ``serial``."""
    try:
        document, _ = store.read_json(store.paths.leaf(ref))
    except CertlockerError as exc:
        log.warning("ari.leaf_unreadable", extra={"certificate": ref.id,
                                                  "error": type(exc).__name__})
        return None
    if not document or document.get("serial") != serial:
        return None
    pem = document.get("certificate")
    return pem if isinstance(pem, str) else None


def current_leaf(store: Store, ref: CertificateRef, current: CertificateInfo) -> str | None:
    """The public leaf of ``current``: carried in the status record since it was kept
    there, else (records from before) the separate leaf document."""
    return current.leaf_pem or stored_leaf(store, ref, current.serial)


def replaces_for(store: Store, spec: CertificateSpec,
                 status: CertificateStatus | None) -> str | None:
    """The ARI id of the certificate a new issuance replaces: only when one is current
    and the spec's issuer issued it (another CA knows nothing of it)."""
    current = status.current if status else None
    if current is None or current.issuer_name != spec.issuer:
        return None
    pem = current_leaf(store, spec.ref, current)
    return ari.cert_id(pem) if pem else None


def refreshed(store: Store, issuers: Mapping[str, Issuer], spec: CertificateSpec,
              status: CertificateStatus | None, now: dt.datetime) -> AriWindow | None:
    """A fresh window for the current certificate when one is due (``check_due``) and
    its issuer speaks ARI; None when there is nothing new."""
    if not check_due(status, now):
        return None
    assert status is not None and status.current is not None
    issuer = issuers.get(status.current.issuer_name or spec.issuer)
    if issuer is None or not isinstance(issuer, RenewalInfoSource):
        return None
    pem = current_leaf(store, spec.ref, status.current)
    return fetch(issuer, status.current.serial, pem, now) if pem else None


class _Superseded(Exception):
    """The certificate a renewal window was fetched for is no longer current."""


def refresh_status(store: Store, issuers: Mapping[str, Issuer], spec: CertificateSpec,
                   status: CertificateStatus | None, now: dt.datetime,
                   ) -> CertificateStatus | None:
    """Store a fresh window (``refreshed``) in the status; the new status, or ``status``
    unchanged when there was nothing new.

    :raises Conflict: the status kept changing under us.
    """
    window = refreshed(store, issuers, spec, status, now)
    if window is None:
        return status

    def change(old: CertificateStatus | None) -> CertificateStatus:
        if old is None or old.current is None or old.current.serial != window.serial:
            raise _Superseded()
        return old.replace(ari=window)

    try:
        return update_status(store, spec.ref, change)
    except _Superseded:  # renewed meanwhile: that issuance fetched its own window
        found = store.read_status(spec.ref)
        return found[0] if found else status
