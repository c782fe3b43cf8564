"""Which certificates expire on which day: ``system/expiry/<YYYYMMDD>/<cert id>``.

``GET /v1/certificates?expiring_within=30d`` must not read 100,000 status records to
find the few that expire soon. The index lists the day folders up to the cutoff and
the ids in them, so the work follows what expires, not the inventory. Entries are
hints, like the due index: the listing re-reads each certificate and drops one that no
longer matches, and the reconciler's sweep files an entry that is missing.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterator

from ..errors import NotFound
from ..models import CertificateRef
from .ports import Store


def day_of(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y%m%d")


class ExpiryIndex:
    def __init__(self, store: Store) -> None:
        self._store = store

    def put(self, ref: CertificateRef, not_after: dt.datetime) -> None:
        self._store.write_json(self._store.paths.expiry_entry(day_of(not_after), ref),
                               {"not_after": not_after.isoformat()}, cas=None)

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
        last = day_of(cutoff)
        paths = self._store.paths
        days = sorted(d.rstrip("/") for d in self._store.list(paths.expiry_dir())
                      if d.endswith("/") and d.rstrip("/").isdigit())
        for day in days:
            if day > last:
                break
            for name in self._store.list(paths.expiry_dir(day)):
                parts = name.split(".")
                if len(parts) != 3:
                    continue
                ref = CertificateRef(*parts)
                if environment not in (None, ref.environment) or service not in (
                        None, ref.service):
                    continue
                yield ref
