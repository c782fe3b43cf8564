"""Which certificates expire on which day: ``system/expiry/<YYYYMMDD>/<cert id>``.

``GET /v1/certificates?expiring_within=30d`` must not read 100,000 status records to
find the few that expire soon. The index lists the day folders up to the cutoff (named
by a small document of the days holding entries, ``day_folders``, not by listing the
root) and the ids in them, so the
work follows what expires, not the inventory. Entries are
hints, like the due index: the listing re-reads each certificate and drops one that no
longer matches, and the reconciler's sweep files an entry that is missing.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

from ...clock import Clock
from ...errors import NotFound
from ...models import CertificateRef
from .day_folders import DayFolders, day_of
from ..ports import Store


class ExpiryIndex:
    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self._store = store
        self.days = DayFolders(store, "expiry", store.paths.expiry_dir(), clock=clock)

    def put(self, ref: CertificateRef, not_after: dt.datetime) -> None:
        day = day_of(not_after)
        self._store.write_json(self._store.paths.expiry_entry(day, ref),
                               {"not_after": not_after.isoformat()}, cas=None)
        self.days.filed(day)

    def exists(self, ref: CertificateRef, not_after: dt.datetime) -> bool:
        path = self._store.paths.expiry_entry(day_of(not_after), ref)
        return self._store.read_json(path)[0] is not None

    def repair(self, ref: CertificateRef, not_after: dt.datetime) -> None:
        """File the entry if it is missing (the sweep: one read when all is well)."""
        if not self.exists(ref, not_after):
            self.put(ref, not_after)

    def remove(self, ref: CertificateRef, not_after: dt.datetime) -> None:
        try:
            self._store.destroy(self._store.paths.expiry_entry(day_of(not_after), ref))
        except NotFound:
            pass

    def moved(self, ref: CertificateRef, old: dt.datetime | None, new: dt.datetime) -> None:
        """A new certificate replaced one expiring at ``old``."""
        self.put(ref, new)
        if old is not None and day_of(old) != day_of(new):
            self.remove(ref, old)

    def refs_until(self, cutoff: dt.datetime, environment: str | None = None,
                   service: str | None = None) -> Iterator[CertificateRef]:
        """Certificates filed on days up to ``cutoff``'s (already expired included)."""
        paths = self._store.paths
        for day in self.days.days_through(day_of(cutoff)):
            for name in self._store.list(paths.expiry_dir(day)):
                parts = name.split(".")
                if len(parts) != 3:
                    continue
                ref = CertificateRef(*parts)
                if environment not in (None, ref.environment) or service not in (
                        None, ref.service):
                    continue
                yield ref
