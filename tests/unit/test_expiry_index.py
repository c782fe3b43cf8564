"""The expiry index: the listing of what expires soon follows what expires."""

from __future__ import annotations

import datetime as dt

from certlocker.lifecycle.records.expiry_index import ExpiryIndex
from certlocker.models import CertificateRef
from tests.support.memory_store import MemoryStore

NOW = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.timezone.utc)


def ref(env: str, service: str, name: str = "www") -> CertificateRef:
    return CertificateRef(env, service, name)


def test_lists_only_the_certificates_expiring_by_the_cutoff_including_expired_ones():
    index = ExpiryIndex(MemoryStore())
    index.put(ref("prod", "a"), NOW - dt.timedelta(days=2))   # already expired
    index.put(ref("prod", "b"), NOW + dt.timedelta(days=5))
    index.put(ref("dev", "c"), NOW + dt.timedelta(days=20))
    index.put(ref("prod", "d"), NOW + dt.timedelta(days=90))
    found = list(index.refs_until(NOW + dt.timedelta(days=30)))
    assert sorted(r.id for r in found) == ["dev.c.www", "prod.a.www", "prod.b.www"]
    assert [r.id for r in index.refs_until(NOW + dt.timedelta(days=30), "prod")] == [
        "prod.a.www", "prod.b.www"]
    assert [r.id for r in index.refs_until(NOW + dt.timedelta(days=30), service="c")] == [
        "dev.c.www"]


def test_a_renewal_moves_the_entry_to_its_new_day():
    store = MemoryStore()
    index = ExpiryIndex(store)
    old, new = NOW + dt.timedelta(days=3), NOW + dt.timedelta(days=93)
    index.put(ref("prod", "a"), old)
    index.moved(ref("prod", "a"), old, new)
    assert list(index.refs_until(NOW + dt.timedelta(days=30))) == []
    assert [r.id for r in index.refs_until(new)] == ["prod.a.www"]


def test_the_listing_does_not_read_the_days_after_the_cutoff():
    store = MemoryStore()
    index = ExpiryIndex(store)
    for i in range(200):
        index.put(ref("prod", f"s{i}"), NOW + dt.timedelta(days=40 + i % 50))
    index.put(ref("prod", "soon"), NOW + dt.timedelta(days=1))
    lists: list[str] = []
    original = store.list

    def counting(logical: str) -> list[str]:
        lists.append(logical)
        return original(logical)

    store.list = counting  # type: ignore[method-assign]
    assert [r.id for r in index.refs_until(NOW + dt.timedelta(days=7))] == ["prod.soon.www"]
    assert lists == ["system/expiry/20300111/"]  # not the root: the days are filed


def test_repair_files_a_missing_entry_once():
    store = MemoryStore()
    index = ExpiryIndex(store)
    index.repair(ref("prod", "a"), NOW)
    index.repair(ref("prod", "a"), NOW)
    assert [r.id for r in index.refs_until(NOW)] == ["prod.a.www"]
