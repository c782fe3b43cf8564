"""The due index: hints in Vault saying which certificate needs attention when.

``system/schedule/<YYYYMMDD>/<HHMM>/<certificate id>`` (UTC day and minute of the next
action). A tick lists the days up to today (named by a small document of the days
holding hints, ``day_folders``, not by listing the root), the minutes up to now of those
days, and the ids under each: its cost follows what is due, not the inventory. Hints are only
hints: the reconciler re-reads spec and status before acting, and a periodic full sweep
re-files any hint that went missing. See docs/decisions/0002-due-index.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from ...clock import Clock, rfc3339
from ...errors import CertlockerError, NotFound
from ...models import CertificateRef, CertificateSpec, CertificateStatus
from ..policy import alerts
from .day_folders import DayFolders
from ..policy.planning import next_action_at
from ..verification import next_verification_at
from ..ports import Store

log = logging.getLogger(__name__)


def slot_of(at: dt.datetime) -> tuple[str, str]:
    """``(YYYYMMDD, HHMM)`` of ``at`` in UTC."""
    utc = at.astimezone(dt.timezone.utc)
    return utc.strftime("%Y%m%d"), utc.strftime("%H%M")


@dataclasses.dataclass(frozen=True)
class Hint:
    ref: CertificateRef
    day: str
    minute: str

    def path(self, store: Store) -> str:
        return store.paths.schedule_entry(self.day, self.minute, self.ref)


class DueIndex:
    def __init__(self, store: Store, policy: alerts.AlertPolicy = alerts.DEFAULT_POLICY,
                 clock: Clock | None = None,
                 verify_interval: dt.timedelta | None = None) -> None:
        """``verify_interval``: every hint also covers the certificate's next
        served-certificate check, so a change made anywhere (an API worker's renewal)
        brings the reconciler to verify it, not only the reconciler's own passes."""
        self._store = store
        self.policy = policy
        self.verify_interval = verify_interval
        self.days = DayFolders(store, "schedule", store.paths.schedule_dir(), clock=clock)

    def hint_for(self, ref: CertificateRef, at: dt.datetime) -> Hint:
        day, minute = slot_of(at)
        return Hint(ref, day, minute)

    def put(self, ref: CertificateRef, at: dt.datetime) -> Hint:
        hint = self.hint_for(ref, at)
        self._store.write_json(hint.path(self._store), {"at": rfc3339(at)}, cas=None)
        self.days.filed(hint.day)
        return hint

    def exists(self, hint: Hint) -> bool:
        return self._store.read_json(hint.path(self._store))[0] is not None

    def remove(self, hint: Hint) -> None:
        try:
            self._store.destroy(hint.path(self._store))
        except NotFound:
            pass  # another replica handled it too

    def schedule(self, spec: CertificateSpec, status: CertificateStatus | None,
                 now: dt.datetime, *, handled: Hint | None = None,
                 only_if_missing: bool = False,
                 also_at: dt.datetime | None = None) -> Hint | None:
        """File the hint for this certificate's next action; None when it needs none.

        ``also_at`` is another moment the reconciler must look (the next scheduled
        verification). ``handled`` is the hint being worked on: it is not rewritten when
        the next action falls in the same minute. ``only_if_missing`` reads before writing
        (the sweep), so an hourly pass over the inventory does not add a KV version per certificate.
        """
        at = next_action_at(spec, status, now, self.policy)
        if self.verify_interval is not None:
            check = next_verification_at(spec.targets, status, now, self.verify_interval)
            if check is not None and (at is None or check < at):
                at = check  # now, after a change: the targets serve what?
        if also_at is not None and (at is None or also_at < at):
            at = also_at  # e.g. the next served-certificate verification
        if at is None:
            return None
        hint = self.hint_for(spec.ref, at)
        if hint == handled or (only_if_missing and self.exists(hint)):
            return hint
        return self.put(spec.ref, at)

    def schedule_quietly(self, spec: CertificateSpec, status: CertificateStatus | None,
                         now: dt.datetime) -> Hint | None:
        """``schedule`` for callers whose own work already succeeded (the API): a lost
        hint is repaired by the sweep, so a failure here is logged, not raised."""
        try:
            return self.schedule(spec, status, now)
        except CertlockerError as exc:
            log.warning("schedule.hint_failed", extra={"certificate": spec.ref.id,
                                                       "error": type(exc).__name__})
            return None

    def due(self, now: dt.datetime, limit: int) -> list[Hint]:
        """Hints filed at or before ``now``'s minute, oldest first, at most ``limit``.

        Lists the day folders up to today that hold hints, the minutes of those days, and
        the ids of due minutes. A hint whose id does not parse is deleted.
        """
        today, this_minute = slot_of(now)
        paths = self._store.paths
        found: list[Hint] = []
        for day in self.days.days_through(today):
            minutes = sorted(m.rstrip("/") for m in self._store.list(paths.schedule_dir(day))
                             if m.endswith("/") and _is_digits(m.rstrip("/"), 4))
            for minute in minutes:
                if day == today and minute > this_minute:
                    break
                for name in sorted(self._store.list(paths.schedule_dir(day, minute))):
                    try:
                        ref = CertificateRef.parse_id(name)
                    except CertlockerError:
                        if not name.endswith("/"):
                            self._store.destroy(paths.schedule_dir(day, minute) + name)
                        continue
                    found.append(Hint(ref, day, minute))
                    if len(found) >= limit:
                        return found
        return found


def _is_digits(value: str, length: int) -> bool:
    return len(value) == length and value.isascii() and value.isdigit()
