"""A small, cached summary of every certificate's status, for /metrics.

Scrapes must not cost a walk over the whole inventory (100,000 status records in Vault),
so the summary is rebuilt in the background at most every ``max_age`` seconds and
scrapes read the last one. Each process (each gunicorn worker) keeps its own copy; the
values come from Vault, so every copy says the same thing.

``row`` is pure; ``load_rows`` walks ``status/`` with certlocker's own token.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import logging
import threading
import time
from typing import Callable, Generic, Iterator, TypeVar

from ..errors import CertlockerError, InvalidInput
from ..fanout import bounded_map
from ..lifecycle.ports import Store
from ..lifecycle import renewal_info
from ..lifecycle.policy import shown
from ..lifecycle.verification import shown_node
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class CertificateRow:
    ref: CertificateRef
    issuer: str
    state: str
    not_after: dt.datetime | None
    renewal_at: dt.datetime | None
    ready: str  # "True" | "False" | "Unknown", as cert-manager's Ready condition
    targets: tuple[tuple[str, str], ...]  # (node address, verification status)
    renewal_failing: bool = False  # the last issuance attempt failed (lifecycle.shown)


def ready_condition(status: CertificateStatus, now: dt.datetime) -> str:
    """True while a current, unexpired certificate is stored; Unknown before the first
    issuance finishes; False when it failed or expired or was revoked/retired."""
    if status.current is not None and status.current.not_after > now and status.state in (
            State.VALID, State.ISSUING, State.PENDING):
        return "True"
    if status.current is None and status.state in (State.PENDING, State.ISSUING):
        return "Unknown"
    return "False"


def row(spec: CertificateSpec, status: CertificateStatus, now: dt.datetime) -> CertificateRow:
    current = status.current
    renewal_at = None
    if current is not None:
        try:
            renewal_at = renewal_info.plan(current, spec.renew_before, status, now).at
        except InvalidInput:
            renewal_at = None
    return CertificateRow(
        ref=spec.ref, issuer=spec.issuer, state=shown.shown_state(status, now).value,
        not_after=current.not_after if current else None, renewal_at=renewal_at,
        ready=ready_condition(status, now),
        targets=tuple((t.address, shown_node(t, current).status) for t in status.targets),
        renewal_failing=shown.renewal_failing(status))


def iter_refs(store: Store) -> Iterator[CertificateRef]:
    """Every certificate with a status record: ``status/<env>/<service>/<name>``."""
    paths = store.paths
    for env in store.list(paths.status_dir()):
        if not env.endswith("/"):
            continue
        env = env.rstrip("/")
        for service in store.list(paths.status_dir(env)):
            if not service.endswith("/"):
                continue
            service = service.rstrip("/")
            for name in store.list(paths.status_dir(env, service)):
                if not name.endswith("/"):
                    yield CertificateRef(env, service, name)


def load_rows(store: Store, now: dt.datetime, pool: cf.Executor,
              workers: int = 8) -> list[CertificateRow]:
    """Read every status and spec (``workers`` reads in flight on ``pool``). A
    certificate whose records cannot be read is left out, never fails the whole
    summary."""

    def one(ref: CertificateRef) -> CertificateRow | None:
        try:
            status = store.read_status(ref)
            spec = store.read_spec(ref)
        except CertlockerError as exc:
            log.warning("metrics.row_failed", extra={"certificate": ref.id,
                                                     "error": type(exc).__name__})
            return None
        if status is None or spec is None:
            return None
        return row(spec[0], status[0], now)

    return [r for r in bounded_map(pool, one, iter_refs(store), workers) if r is not None]


class SummaryCache(Generic[T]):
    """The last summary (what ``loader`` returns), never older than ``max_age`` plus one
    computation.

    A background thread rebuilds it every ``max_age`` seconds for as long as someone has
    asked within ``keep_warm`` seconds, so a process scraped regularly answers at once
    with a summary at most ``max_age`` + one rebuild old, however rarely each process
    (each gunicorn worker) is scraped. A summary older than that (the first scrape, one
    after a quiet spell, a rebuild that failed because Vault was away) is never served:
    the scrape waits up to ``first_wait`` seconds for a rebuild and gets None if none
    came. ``age`` says how old the last summary is either way, for an alert. Two
    rebuilds never run at once."""

    def __init__(self, loader: Callable[[], T], max_age: float, *,
                 first_wait: float = 20.0, keep_warm: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader
        self._max_age = max_age
        self._first_wait = first_wait
        self._keep_warm = keep_warm if keep_warm is not None else max(300.0, 5 * max_age)
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._value: T | None = None
        self._built_at: float | None = None
        self._tried_at: float | None = None  # end of the last rebuild, built or not
        self._asked_at = monotonic()
        self._wanted = False  # a scrape waits for a rebuild now
        self._loading = False
        self._generation = 0  # rebuilds finished
        self._worker: threading.Thread | None = None
        self.last_duration: float | None = None

    def value(self) -> T | None:
        """The current summary; None when none is young enough (see the class)."""
        with self._cond:
            self._asked_at = self._monotonic()
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, daemon=True,
                                                name="metrics-summary")
                self._worker.start()
            if self._fresh():
                return self._value
            seen = self._generation
            if not self._loading:
                self._wanted = True
                self._cond.notify_all()
            deadline = time.monotonic() + self._first_wait
            while self._generation == seen or (self._loading and not self._fresh()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._value if self._fresh() else None

    def age(self) -> float | None:
        with self._cond:
            return None if self._built_at is None else self._monotonic() - self._built_at

    def refresh_now(self) -> None:
        """Rebuild in the calling thread (tests)."""
        self._refresh()

    def _fresh(self) -> bool:
        if self._built_at is None:
            return False
        return self._monotonic() - self._built_at <= self._max_age + (self.last_duration or 0)

    def _run(self) -> None:
        """Rebuild every ``max_age`` while asked for; end after ``keep_warm`` unasked."""
        while True:
            with self._cond:
                while True:
                    now = self._monotonic()
                    if now - self._asked_at > self._keep_warm:
                        self._worker = None
                        return
                    if self._wanted or self._tried_at is None:
                        break
                    due_in = self._tried_at + self._max_age - now
                    if due_in <= 0:
                        break
                    self._cond.wait(min(due_in, self._keep_warm))
                self._wanted = False
            self._refresh()

    def _refresh(self) -> None:
        with self._cond:
            if self._loading:
                return
            self._loading = True
        started = self._monotonic()
        value = None
        try:
            value = self._loader()
        except CertlockerError as exc:
            log.warning("metrics.summary_failed", extra={"error": type(exc).__name__})
        except Exception as exc:  # noqa: BLE001 - the worker thread must go on
            log.error("metrics.summary_failed", extra={"error": type(exc).__name__})
        finally:
            with self._cond:
                self._loading = False
                self._tried_at = self._monotonic()
                if value is not None:
                    self._value = value
                    self._built_at = self._tried_at
                    self.last_duration = self._built_at - started
                self._generation += 1
                self._cond.notify_all()
