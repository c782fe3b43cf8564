"""This process's queue of issuances: the ones a declaration, a renewal request or a
spec change asked for, run on the issuance pool and decided again under the lease.

The queue is only a shortcut: every queued issuance also has a due hint in Vault, so if
this process dies the reconciler does the work. What the queue keeps in memory is
whether an issuance a declaration queued filed its own hint again (``file_hint``), so
the declaration's hint is removed only when nothing needs it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from typing import Callable

from ..clock import Clock
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State
from .policy import planning
from .records.due_index import DueIndex, Hint
from .ports import Store

log = logging.getLogger(__name__)

Decide = Callable[[CertificateSpec, CertificateStatus | None], bool]
#: ``CertificateService.issue``: ``(ref, decide, *, first_lease)``.
Issue = Callable[..., CertificateStatus]


class IssuanceQueue:
    def __init__(self, pool: cf.Executor, issue: Issue, store: Store, clock: Clock,
                 due: DueIndex | None) -> None:
        self._pool = pool
        self._issue = issue
        self._store = store
        self._clock = clock
        self._due = due
        # Declarations' hints while their issuance runs -> filed again by it (file_hint)?
        self._refiled: dict[Hint, bool] = {}

    def needed(self, spec: CertificateSpec, status: CertificateStatus | None) -> bool:
        """The reconciler's decision, asked again under the lease."""
        return planning.decide(spec, status, self._clock.now()).needed

    def schedule(self, ref: CertificateRef, *, declared: bool = False,
                 first_lease: bool = False, hint: Hint | None = None,
                 ) -> cf.Future[CertificateStatus]:
        """Queue an issuance on this process's pool; ``declared``: one a declaration
        queued, with the due hint it filed (see ``_issue_declared``). Either is decided
        again under the lease: the reconciler may have done the work already."""
        if declared:
            return self._pool.submit(self._issue_declared, ref, hint, first_lease)
        return self._pool.submit(self._issue, ref, self.needed)

    def _issue_declared(self, ref: CertificateRef, hint: Hint | None,
                        first_lease: bool) -> CertificateStatus:
        """The issuance a declaration queued. A reconciler may have taken it over while it
        waited (the declaration's hint is due at once), so it is decided again under the
        lease; once the certificate is issued, or its failure has filed its retry, the
        declaration's hint is removed so the reconciler does not look again, unless the
        issuance filed its next action (a retry, a first verification) in the same
        minute: that is the same hint now, and removing it would lose the action."""
        if hint is not None:
            self._refiled[hint] = False
        try:
            status = self._issue(ref, decide=self.needed, first_lease=first_lease)
        finally:
            refiled = self._refiled.pop(hint, False) if hint is not None else False
        if (hint is not None and self._due is not None and not refiled
                and (status.state is State.VALID or status.last_error)):
            self._due.remove(hint)
        return status

    def file_hint(self, spec: CertificateSpec, status: CertificateStatus) -> CertificateStatus:
        """File the due-index hint for the certificate's next action (retry or renewal)."""
        if self._due is not None:
            filed = self._due.schedule_quietly(spec, status, self._clock.now())
            if filed is not None and filed in self._refiled:
                self._refiled[filed] = True  # a declaration's hint, filed again
        return status

    def wait_settled(self, ref: CertificateRef, future: cf.Future[CertificateStatus],
                     settled: Callable[[CertificateStatus], bool],
                     timeout: float) -> CertificateStatus | None:
        """Wait up to ``timeout`` seconds for our issuance, then, if another worker or
        replica holds the certificate's lease, for the status it writes to satisfy
        ``settled``. Returns the last status seen."""
        deadline = time.monotonic() + timeout
        try:
            status: CertificateStatus | None = future.result(timeout=timeout)
        except cf.TimeoutError:
            status = None
        delay = 0.05
        while status is None or not settled(status):
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
            found = self._store.read_status(ref)
            status = found[0] if found else None
        return status
