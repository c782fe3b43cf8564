"""The day folders of an index (``<root>/<YYYYMMDD>/...``), found without listing the root.

Vault lists a folder by walking every key beneath it, whatever the page size asked for:
at 100,000 certificates one LIST of ``system/expiry/`` costs 165-190 ms, while a LIST
of one day's folder costs what that day holds. So readers compute the day names from a
*floor* up to the last day they need and list only those folders (a day without
entries answers at once). The floor is kept at ``system/index-floors/<index>``; it is
right when no entry lies on an earlier day, and three rules keep it so:

- it is never above the day before yesterday, so a writer filing an entry on a later day
  (every renewal, every new certificate) never touches it;
- a writer filing an entry on an older day lowers it after the entry is stored, always
  writing a new version (check-and-set), even when it is already low enough;
- ``tidy`` (the reconciler, after a full sweep) lists the root once and raises it to the
  oldest day that still holds entries, check-and-set against the version it read
  *before* listing: a writer that lowered it meanwhile makes the raise fail, never the
  other way round.

A reader that finds no floor (an index written before floors existed) lists the root,
which is always right, and files the floor for the next reader. A span longer than
``max_span_days`` is also answered by listing the root: that walk then costs about what
the index holds anyway.
"""

from __future__ import annotations

import datetime as dt
import logging

from ..clock import Clock, SystemClock
from ..errors import CertlockerError, Conflict
from .ports import Store

log = logging.getLogger(__name__)

MARGIN = dt.timedelta(days=2)  # clock skew between replicas stays well inside this
_FORMAT = "%Y%m%d"


def day_of(at: dt.datetime) -> str:
    """``YYYYMMDD`` of ``at`` in UTC."""
    return at.astimezone(dt.timezone.utc).strftime(_FORMAT)


def is_day(name: str) -> bool:
    return len(name) == 8 and name.isascii() and name.isdigit()


class DayFolders:
    def __init__(self, store: Store, index: str, root: str, *, clock: Clock | None = None,
                 max_span_days: int = 92, attempts: int = 5) -> None:
        self._store = store
        self._root = root
        self._floor_path = store.paths.index_floor(index)
        self._clock = clock or SystemClock()
        self._max_span = max_span_days
        self._attempts = attempts

    def days_through(self, last: str) -> list[str]:
        """Every day up to ``last`` (inclusive) that may hold entries, oldest first.

        Days without entries may be among them: listing such a folder finds nothing.
        """
        doc, _ = self._store.read_json(self._floor_path)
        floor = doc.get("floor") if doc else None
        if isinstance(floor, str) and is_day(floor):
            if floor > last:
                return []
            span = _parse(last) - _parse(floor)
            if span.days < self._max_span:
                return [_format(_parse(floor) + dt.timedelta(days=i))
                        for i in range(span.days + 1)]
            return [d for d in self._listed_days() if d <= last]
        listed = self._listed_days()
        if doc is None:
            self._file_floor(listed)
        return [d for d in listed if d <= last]

    def filed(self, day: str) -> None:
        """Call after storing an entry on ``day``: lowers the floor when it must.

        A failure is logged, not raised: the entry is stored, and ``tidy`` lists the root,
        so the next tidy repairs the floor.
        """
        if day >= self._safe_floor():
            return
        try:
            for _ in range(self._attempts):
                doc, version = self._store.read_json(self._floor_path)
                current = doc.get("floor") if doc else None
                if not (isinstance(current, str) and is_day(current)):
                    listed = self._listed_days()
                    current = min(listed[:1] + [self._safe_floor()])
                try:
                    self._store.write_json(self._floor_path, {"floor": min(current, day)},
                                           cas=version)
                    return
                except Conflict:
                    continue
            log.warning("index.floor_not_lowered", extra={"index": self._floor_path,
                                                          "day": day})
        except CertlockerError as exc:
            log.warning("index.floor_not_lowered", extra={
                "index": self._floor_path, "day": day, "error": type(exc).__name__})

    def tidy(self) -> str:
        """Raise the floor to the oldest day holding entries (never above the safe
        bound); returns the floor now filed. A concurrent lowering wins."""
        doc, version = self._store.read_json(self._floor_path)
        floor = min(self._listed_days()[:1] + [self._safe_floor()])
        if doc is not None and doc.get("floor") == floor:
            return floor
        try:
            self._store.write_json(self._floor_path, {"floor": floor}, cas=version)
        except Conflict:
            log.info("index.floor_raise_lost", extra={"index": self._floor_path})
        return floor

    def _listed_days(self) -> list[str]:
        return sorted(name.rstrip("/") for name in self._store.list(self._root)
                      if name.endswith("/") and is_day(name.rstrip("/")))

    def _file_floor(self, listed: list[str]) -> None:
        try:
            self._store.write_json(self._floor_path,
                                   {"floor": min(listed[:1] + [self._safe_floor()])}, cas=0)
        except Conflict:
            pass  # a writer or another reader filed it first: theirs is as good
        except CertlockerError as exc:
            log.warning("index.floor_not_filed", extra={"index": self._floor_path,
                                                        "error": type(exc).__name__})

    def _safe_floor(self) -> str:
        return day_of(self._clock.now() - MARGIN)


def _parse(day: str) -> dt.date:
    return dt.datetime.strptime(day, _FORMAT).date()


def _format(day: dt.date) -> str:
    return day.strftime(_FORMAT)
