"""Issuances put off to a rate-limit slot come back at that slot, in the process that
put them off.

The due-index hint filed with the deferral stays the fallback (a process that dies
takes its wake-ups with it), but the reconciler finds a hint at its next tick, up to a
tick after the slot; a certificate late for its slot orders only if the window still has
room (``records.rate_books``). Waking at the slot keeps a mass replacement under a limit
at the limit's pace, so it finishes when the ETA said.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import heapq
import itertools
import logging
import threading
from typing import Any, Callable

from ..clock import Clock
from ..models import CertificateRef

log = logging.getLogger(__name__)


class Wakeups:
    """One timer thread (from ``runner``, only while something waits) that calls
    ``wake(ref)`` at each requested time, earliest first."""

    def __init__(self, runner: cf.Executor, wake: Callable[[CertificateRef], Any],
                 clock: Clock) -> None:
        self._runner = runner
        self._wake = wake
        self._clock = clock
        self._heap: list[tuple[dt.datetime, int, CertificateRef]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._running = False
        self._stopped = False

    def at(self, ref: CertificateRef, when: dt.datetime) -> None:
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (when, next(self._order), ref))
            if not self._running:
                self._running = True
                self._runner.submit(self._loop)
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped or not self._heap:
                        self._running = False
                        return
                    wait = (self._heap[0][0] - self._clock.now()).total_seconds()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                _, _, ref = heapq.heappop(self._heap)
            try:
                self._wake(ref)
            except Exception as exc:  # noqa: BLE001 - the due-index hint still stands
                log.warning("issuance.wakeup_failed", extra={
                    "certificate": ref.id, "error": type(exc).__name__})
