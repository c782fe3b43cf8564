"""In-flight journals a dead process left: each is finished or cleared under the lease.

A journal (``system/inflight/...``) holds the key and order of an issuance that has not
stored its certificate yet. Most are resumed by the certificate's next issuance; these
are the ones nothing else looks at again.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from ...errors import CertlockerError, NotFound
from ...models import CertificateRef, CertificateSpec, CertificateStatus
from ..ports import Store
from ..views import listed

log = logging.getLogger(__name__)

Decide = Callable[[CertificateSpec, CertificateStatus | None], bool]
#: ``CertificateService.issue``: ``(ref, decide)``.
Issue = Callable[..., CertificateStatus]


def journaled(store: Store) -> Iterable[CertificateRef]:
    """Every certificate with an in-flight journal (a key not yet stored)."""
    return listed(store, store.paths.inflight_dir)


def finish_journals(refs: Iterable[CertificateRef], issue: Issue, needed: Decide) -> None:
    """Take every journal of ``refs`` through ``issue`` under the lease: resumed if its
    certificate still needs issuing (``needed``), cleared if not, left alone while a
    live holder works on it.

    :raises CertlockerError: the journals cannot be listed."""
    for ref in list(refs):
        try:
            issue(ref, decide=needed)
        except NotFound:
            log.warning("journal.without_spec", extra={"certificate": ref.id})
        except CertlockerError as exc:
            log.warning("journal.unfinished", extra={
                "certificate": ref.id, "error": type(exc).__name__})
