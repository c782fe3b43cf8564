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
from ..lifecycle.ports import Store
from ..lifecycle import renewal_info, shown
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


def load_rows(store: Store, now: dt.datetime, workers: int = 8) -> list[CertificateRow]:
    """Read every status and spec (``workers`` reads in flight). A certificate whose
    records cannot be read is left out, never fails the whole summary."""

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

    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="metrics") as pool:
        return [r for r in pool.map(one, iter_refs(store)) if r is not None]


class SummaryCache(Generic[T]):
    """The last summary (what ``loader`` returns), rebuilt in a background thread once
    it is older than ``max_age`` seconds. A scrape never waits for a rebuild except the
    very first one (up to ``first_wait`` seconds), and two rebuilds never run at once."""

    def __init__(self, loader: Callable[[], T], max_age: float, *,
                 first_wait: float = 20.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader
        self._max_age = max_age
        self._first_wait = first_wait
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._value: T | None = None
        self._built_at: float | None = None
        self._refreshing: threading.Thread | None = None
        self.last_duration: float | None = None

    def value(self) -> T | None:
        """The current summary (None if none could be built yet)."""
        with self._lock:
            stale = self._built_at is None or (
                self._monotonic() - self._built_at >= self._max_age)
            if stale and self._refreshing is None:
                self._refreshing = threading.Thread(target=self._refresh, daemon=True,
                                                    name="metrics-summary")
                self._refreshing.start()
            waiting = self._refreshing if self._value is None else None
        if waiting is not None:
            waiting.join(self._first_wait)
        with self._lock:
            return self._value

    def age(self) -> float | None:
        with self._lock:
            return None if self._built_at is None else self._monotonic() - self._built_at

    def refresh_now(self) -> None:
        """Rebuild in the calling thread (tests, and the first scrape's fallback)."""
        self._refresh()

    def _refresh(self) -> None:
        started = self._monotonic()
        value = None
        try:
            value = self._loader()
        except CertlockerError as exc:
            log.warning("metrics.summary_failed", extra={"error": type(exc).__name__})
        finally:
            with self._lock:
                self._refreshing = None
                if value is not None:
                    self._value = value
                    self._built_at = self._monotonic()
                    self.last_duration = self._built_at - started
