"""An operator's forced renewal, made durable before it is answered.

The request is recorded in the status (check-and-set) and as a due hint at now, so the
reconciler issues from those alone if every process dies after the answer
(``reissue.RENEWAL_REQUESTED``); the queued issuance only makes it sooner.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Callable

from .. import cas
from ..audit.recorder import Auditor, audited
from ..clock import Clock
from ..models import CertificateRef, CertificateStatus, RenewalRequest, State
from .records.due_index import DueIndex
from .ports import Store
from .records.status_writes import update_status


def request_renewal(store: Store, ref: CertificateRef, actor: str, *, clock: Clock,
                    due: DueIndex | None, audit: Auditor,
                    schedule: Callable[[CertificateRef], cf.Future[CertificateStatus]],
                    unless_replaced: str | None = None,
                    ) -> cf.Future[CertificateStatus] | None:
    """Record the request (it also ends a backoff or a refusal's wait, as an operator's
    renewal always has) and its hint, then queue the issuance. A certificate never
    issued has nothing to record: its spec already makes it ``missing``.

    ``unless_replaced``: the serial the request is meant to replace; when the status's
    current certificate is another one already (the replacement happened while the
    request was on its way), nothing is recorded or queued and None is returned."""
    now = clock.now()
    found = store.read_status(ref)
    if found is not None:
        request = RenewalRequest(at=now, by=actor)
        replaced: list[bool] = []

        def requested(old: CertificateStatus | None) -> CertificateStatus:
            if unless_replaced is not None and old is not None and old.current is not None \
                    and old.current.serial != unless_replaced:
                replaced.append(True)
                raise cas.Unchanged(old)
            # An operator's renewal is also the retry a refusal waits for.
            return (old or CertificateStatus(State.PENDING)).replace(
                renewal_request=request, next_attempt_at=None, retryable=True)

        update_status(store, ref, requested, known=found)
        if replaced:
            return None
    if due is not None:
        due.put(ref, now)
    audited(audit, actor, "certificate.renew.requested", ref.id, "success")
    return schedule(ref)
