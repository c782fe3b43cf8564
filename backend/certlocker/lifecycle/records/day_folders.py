"""The day folders of an index (``<root>/<YYYYMMDD>/...``), found without listing the root.

Vault lists a folder by walking every key beneath it, whatever the page size asked for:
at 100,000 certificates one LIST of ``system/expiry/`` costs 165-190 ms, while a LIST
of one day's folder costs what that day holds. So the days that hold entries are kept
in one small document, ``system/index-days/<index>`` = ``{"days": [...]}``, and readers
list only those folders. The document may name a day that has since emptied (listing
it finds nothing) but never misses a day that holds an entry. Three rules keep it so:

- a writer adds its entry's day after the entry is stored. A day from the day before
  yesterday on is added once and then remembered by the process, because ``tidy`` never
  drops such a day; an older day (an expired certificate, overdue work) is written
  every time, check-and-set, even when it is listed already;
- ``tidy`` (the reconciler, after a full sweep) lists the root once and keeps the days
  found there plus every recent day of the document, check-and-set against the version
  it read *before* listing: a writer that added an old day meanwhile makes tidy's write
  fail, never the other way round;
- a reader or writer that finds no document (an index written before it existed) lists
  the root, which is always right, and files what it found, create-only.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from typing import Any

from ... import cas
from ...clock import Clock, SystemClock
from ...errors import CertlockerError, Conflict
from ..ports import Store

log = logging.getLogger(__name__)

#: Days from this far back on are remembered once added (clock skew between replicas
#: stays well inside it); ``tidy`` drops only days a day older still.
MARGIN = dt.timedelta(days=2)


def day_of(at: dt.datetime) -> str:
    """``YYYYMMDD`` of ``at`` in UTC."""
    return at.astimezone(dt.timezone.utc).strftime("%Y%m%d")


def is_day(name: str) -> bool:
    return len(name) == 8 and name.isascii() and name.isdigit()


class DayFolders:
    def __init__(self, store: Store, index: str, root: str, *, clock: Clock | None = None,
                 patience: float = 10.0) -> None:
        self._store = store
        self._root = root
        self._doc_path = store.paths.index_days(index)
        self._clock = clock or SystemClock()
        self._patience = patience
        self._known: set[str] = set()  # recent days this process saw in the document
        self._lock = threading.Lock()  # this process's writers of the document

    def days_through(self, last: str) -> list[str]:
        """The days up to ``last`` (inclusive) that may hold entries, oldest first."""
        doc, _ = self._store.read_json(self._doc_path)
        days = _days(doc)
        if days is None:
            listed = self._listed_days()
            if doc is None:
                self._file(listed)
            days = set(listed)
        return sorted(d for d in days if d <= last)

    def filed(self, day: str) -> None:
        """Call after storing an entry on ``day``: adds the day to the document when it must.

        Threads of one process take turns; writers of other processes that add a day at
        the same time make the check-and-set fail, so it is tried again, with jittered
        pauses, for up to ``patience`` seconds (each round one writer gets through). A
        failure is logged, not raised: the entry is stored, and ``tidy`` lists the root,
        so the next tidy adds the day.
        """
        recent = day >= self._recent()
        if recent and day in self._known:
            return
        deadline = time.monotonic() + self._patience
        pause = [0.001]
        seen: list[set[str]] = []  # the days the last change was applied to

        def add(doc: dict[str, Any] | None) -> dict[str, Any]:
            filed = _days(doc)
            days = set(self._listed_days()) if filed is None else filed
            seen[:] = [days]
            if filed is not None and recent and day in days:
                raise cas.Unchanged(doc)
            return _doc(days | {day})

        def write(new: dict[str, Any], version: int) -> None:
            self._store.write_json(self._doc_path, new, cas=version)

        def again(attempt: int) -> bool:
            if time.monotonic() >= deadline:
                return False
            time.sleep(random.uniform(0, pause[0]))
            pause[0] = min(pause[0] * 2, 0.05)
            return True

        with self._lock:
            try:
                cas.patch(lambda: self._store.read_json(self._doc_path), add, write,
                          again=again, conflict=f"{self._doc_path} keeps changing")
                days = seen[-1]
            except CertlockerError as exc:
                log.warning("index.day_not_added", extra={
                    "index": self._doc_path, "day": day, "error": type(exc).__name__})
                return
            recent_from = self._recent()
            self._known = {d for d in self._known | days | {day} if d >= recent_from}

    def tidy(self) -> list[str]:
        """Drop the old days that no longer hold entries; returns the days now filed.
        A concurrent writer adding an old day wins."""
        doc, version = self._store.read_json(self._doc_path)
        filed = _days(doc)
        keep_from = day_of(self._clock.now() - MARGIN - dt.timedelta(days=1))
        days = set(self._listed_days()) | {d for d in filed or () if d >= keep_from}
        if filed != days:
            try:
                self._store.write_json(self._doc_path, _doc(days), cas=version)
            except Conflict:
                log.info("index.tidy_lost", extra={"index": self._doc_path})
        return sorted(days)

    def _listed_days(self) -> list[str]:
        return sorted(name.rstrip("/") for name in self._store.list(self._root)
                      if name.endswith("/") and is_day(name.rstrip("/")))

    def _file(self, days: list[str]) -> None:
        try:
            self._store.write_json(self._doc_path, _doc(set(days)), cas=0)
        except Conflict:
            pass  # a writer or another reader filed it first: theirs is as good
        except CertlockerError as exc:
            log.warning("index.days_not_filed", extra={"index": self._doc_path,
                                                       "error": type(exc).__name__})

    def _recent(self) -> str:
        return day_of(self._clock.now() - MARGIN)


def _days(doc: dict[str, Any] | None) -> set[str] | None:
    days = doc.get("days") if doc else None
    if isinstance(days, list) and all(isinstance(d, str) and is_day(d) for d in days):
        return set(days)
    return None


def _doc(days: set[str]) -> dict[str, list[str]]:
    return {"days": sorted(days)}
