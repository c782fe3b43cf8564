"""ACME Renewal Information (RFC 9773) in the lifecycle: which certificate a renewal
replaces, and the CA's suggested window fetched into the status.

The pure part (``window_of``, ``plan``, ``check_due``, ``record``) decides and lives in
``policy/renewal_window.py`` (re-exported here); ``replaces_for`` and ``fetch`` read the
stored public leaf and ask the issuer. ARI is advisory: nothing here raises because a
CA cannot be asked.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Mapping

from ..errors import CertlockerError
from ..issuance import ari
from ..models import (AriWindow, CertificateInfo, CertificateRef, CertificateSpec,
                      CertificateStatus)
from ..ports import Issuer, RenewalInfoSource, Store
from .policy.renewal_window import DEFAULT_RECHECK as DEFAULT_RECHECK
from .policy.renewal_window import MAX_RECHECK as MAX_RECHECK
from .policy.renewal_window import MIN_RECHECK as MIN_RECHECK
from .policy.renewal_window import check_due as check_due
from .policy.renewal_window import plan as plan
from .policy.renewal_window import record as record
from .policy.renewal_window import window_of as window_of
from .records.status_writes import update_status

log = logging.getLogger(__name__)


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
