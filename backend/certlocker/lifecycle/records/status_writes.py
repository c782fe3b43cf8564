"""Every write of a certificate's status: one check-and-set read-modify-write.

The status is changed by issuance, verification, revocation, retirement, alerts and
operators' requests, in several processes at once; each change is a function of the
stored status, re-applied to the winner's record after a lost race (``cas.patch``).
"""

from __future__ import annotations

from typing import Callable

from ... import cas
from ...models import CertificateRef, CertificateStatus
from ..ports import Store

Change = Callable[[CertificateStatus | None], CertificateStatus]
#: ``known`` when nothing was read beforehand (``None`` means "read: no status").
UNREAD: bool = False


def update_status(store: Store, ref: CertificateRef, change: Change, *,
                  known: tuple[CertificateStatus, int] | None | bool = UNREAD,
                  ) -> CertificateStatus:
    """Read-modify-write of the status with check-and-set, retried on a race. ``change``
    gets the stored status (or None) and may raise to abort. ``known`` is a status just
    read (or None for none), saving the first read.

    :raises Conflict: the status kept changing under us.
    """
    first: tuple[CertificateStatus | None, int] | None
    if known is False or known is True:
        first = None
    else:
        first = known if known is not None else (None, 0)

    def read() -> tuple[CertificateStatus | None, int]:
        return store.read_status(ref) or (None, 0)

    def write(new: CertificateStatus, version: int) -> None:
        store.write_status(ref, new, cas=version)

    return cas.patch(read, change, write, known=first,
                     conflict=f"status of {ref.id} keeps changing under us")
