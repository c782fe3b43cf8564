"""Index days named by a document in Vault: the root is not listed on the hot path, and
no day holding an entry is ever left out."""

from __future__ import annotations

import datetime as dt
import time

from certlocker.clock import FixedClock
from certlocker.lifecycle.records.due_index import DueIndex
from certlocker.lifecycle.records.expiry_index import ExpiryIndex
from certlocker.models import CertificateRef
from tests.support.memory_store import MemoryStore
from tests.support.threads import run_together

NOW = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def ref(service: str) -> CertificateRef:
    return CertificateRef("prod", service, "www")


class Counting(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []
        self.written: list[str] = []

    def list(self, logical_dir: str) -> list[str]:
        self.listed.append(logical_dir)
        return super().list(logical_dir)

    def write(self, logical, data, cas):  # type: ignore[no-untyped-def]
        self.written.append(logical)
        return super().write(logical, data, cas)


def ids(refs) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r.id for r in refs)


def filed_days(store: MemoryStore, index: str = "expiry") -> list[str]:
    return store.read_json(store.paths.index_days(index))[0]["days"]


def test_readers_list_only_the_days_holding_entries_up_to_the_cutoff():
    store = Counting()
    index = ExpiryIndex(store, FixedClock(NOW))
    for i in range(30):
        index.put(ref(f"later{i}"), NOW + (40 + i) * DAY)
    index.put(ref("soon"), NOW + 3 * DAY)
    store.listed.clear()
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.soon.www"]
    assert store.listed == ["system/expiry/20300113/"]


def test_a_process_adds_a_recent_day_once():
    store = Counting()
    index = ExpiryIndex(store, FixedClock(NOW))
    for i in range(5):
        index.put(ref(f"s{i}"), NOW + 90 * DAY)
    assert store.written.count(store.paths.index_days("expiry")) == 1
    other = ExpiryIndex(store, FixedClock(NOW))  # another process: reads, finds it filed
    other.put(ref("t"), NOW + 90 * DAY)
    assert store.written.count(store.paths.index_days("expiry")) == 1
    assert filed_days(store) == ["20300410"]


def test_an_entry_on_an_old_day_is_found_and_its_day_written_every_time():
    store = Counting()
    index = ExpiryIndex(store, FixedClock(NOW))
    index.put(ref("new"), NOW + 60 * DAY)
    index.put(ref("expired"), NOW - 20 * DAY)  # e.g. a discovered, long expired one
    index.put(ref("expired2"), NOW - 20 * DAY)
    assert store.written.count(store.paths.index_days("expiry")) == 3
    store.listed.clear()
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.expired.www", "prod.expired2.www"]
    assert store.listed == ["system/expiry/20291221/"]


def test_an_index_from_before_the_document_is_listed_once_then_served_from_it():
    store = Counting()
    for days_left, service in ((-30, "expired"), (5, "soon"), (60, "later")):
        at = NOW + days_left * DAY
        store.write_json(store.paths.expiry_entry(at.strftime("%Y%m%d"), ref(service)),
                         {"not_after": at.isoformat()}, cas=None)
    index = ExpiryIndex(store, FixedClock(NOW))
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.expired.www", "prod.soon.www"]
    assert store.listed[0] == "system/expiry/"
    store.listed.clear()
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.expired.www", "prod.soon.www"]
    assert "system/expiry/" not in store.listed


def test_a_writer_finding_no_document_keeps_the_days_already_in_the_index():
    store = MemoryStore()
    at = NOW + 5 * DAY
    store.write_json(store.paths.expiry_entry(at.strftime("%Y%m%d"), ref("old-style")),
                     {"not_after": at.isoformat()}, cas=None)
    index = ExpiryIndex(store, FixedClock(NOW))
    index.put(ref("new"), NOW + 90 * DAY)
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.old-style.www"]


def test_tidy_drops_old_emptied_days_and_keeps_recent_ones():
    store = MemoryStore()
    clock = FixedClock(NOW)
    index = ExpiryIndex(store, clock)
    index.put(ref("expired"), NOW - 20 * DAY)
    index.put(ref("moved"), NOW + 5 * DAY)
    index.put(ref("later"), NOW + 60 * DAY)
    index.remove(ref("expired"), NOW - 20 * DAY)
    index.remove(ref("moved"), NOW + 5 * DAY)
    assert index.days.tidy() == ["20300115", "20300311"]  # a recent day stays, empty
    clock.advance(10 * DAY)
    assert index.days.tidy() == ["20300311"]
    assert filed_days(store) == ["20300311"]


def test_a_writer_adding_an_old_day_during_tidy_wins():
    store = MemoryStore()
    index = ExpiryIndex(store, FixedClock(NOW))
    index.put(ref("later"), NOW + 60 * DAY)
    index.put(ref("expired"), NOW - 20 * DAY)
    index.remove(ref("expired"), NOW - 20 * DAY)  # tidy would drop its day
    late = ref("late-comer")
    listed = store.list

    def list_then_file_an_old_entry(logical: str) -> list[str]:
        names = listed(logical)
        if logical == "system/expiry/" and not store.versions(
                store.paths.expiry_entry("20291201", late)):
            index.put(late, dt.datetime(2029, 12, 1, tzinfo=dt.timezone.utc))
        return names

    store.list = list_then_file_an_old_entry  # type: ignore[method-assign]
    index.days.tidy()  # listed before the late-comer was filed: its write must lose
    assert ids(index.refs_until(NOW)) == ["prod.late-comer.www"]


def test_due_hints_filed_in_the_past_are_found_without_listing_the_root():
    store = Counting()
    due = DueIndex(store, clock=FixedClock(NOW))
    due.put(ref("overdue"), NOW - 10 * DAY)
    due.put(ref("future"), NOW + 30 * DAY)
    store.listed.clear()
    assert [h.ref.id for h in due.due(NOW, limit=10)] == ["prod.overdue.www"]
    assert "system/schedule/" not in store.listed
    assert filed_days(store, "schedule") == ["20291231", "20300209"]


def test_writers_adding_different_days_at_once_all_get_theirs_in():
    class OverANetwork(MemoryStore):
        def read_json(self, logical):  # type: ignore[no-untyped-def]
            got = super().read_json(logical)
            time.sleep(0.001)  # a round trip: other writers act before this one writes
            return got

    store = OverANetwork()
    indexes = [ExpiryIndex(store, FixedClock(NOW)) for _ in range(16)]  # 16 processes

    def writer(n: int) -> None:
        for k in range(5):
            indexes[n].put(ref(f"w{n}-{k}"), NOW + (10 + n * 5 + k) * DAY)

    failed = run_together(16, writer)
    assert not failed
    assert len(filed_days(store)) == 80
