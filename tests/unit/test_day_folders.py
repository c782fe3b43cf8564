"""Index day folders found from a floor: the root is not listed on the hot path, and no
entry is ever hidden below the floor."""

from __future__ import annotations

import datetime as dt

from certlocker.clock import FixedClock
from certlocker.lifecycle.day_folders import DayFolders
from certlocker.lifecycle.due_index import DueIndex
from certlocker.lifecycle.expiry_index import ExpiryIndex
from certlocker.models import CertificateRef
from tests.support.memory_store import MemoryStore

NOW = dt.datetime(2030, 1, 10, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def ref(service: str) -> CertificateRef:
    return CertificateRef("prod", service, "www")


class ListCounting(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []

    def list(self, logical_dir: str) -> list[str]:
        self.listed.append(logical_dir)
        return super().list(logical_dir)


def ids(refs) -> list[str]:
    return sorted(r.id for r in refs)


def test_once_the_floor_is_filed_readers_list_day_folders_not_the_root():
    store = ListCounting()
    index = ExpiryIndex(store, FixedClock(NOW))
    for i in range(30):
        index.put(ref(f"later{i}"), NOW + (40 + i) * DAY)
    index.put(ref("soon"), NOW + 3 * DAY)
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.soon.www"]  # files the floor
    store.listed.clear()
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.soon.www"]
    assert "system/expiry/" not in store.listed
    # from the day before yesterday (the floor's highest) through the cutoff's day
    assert store.listed[0] == "system/expiry/20300108/"
    assert store.listed[-1] == "system/expiry/20300117/"
    assert len(store.listed) == 10


def test_an_entry_filed_on_an_old_day_lowers_the_floor_and_is_found():
    store = ListCounting()
    index = ExpiryIndex(store, FixedClock(NOW))
    index.put(ref("new"), NOW + 60 * DAY)
    list(index.refs_until(NOW))  # floor filed at the day before yesterday
    index.put(ref("expired"), NOW - 20 * DAY)  # e.g. a discovered, long expired one
    store.listed.clear()
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.expired.www"]
    assert "system/expiry/" not in store.listed
    assert store.listed[0] == "system/expiry/20291221/"


def test_an_old_entry_filed_before_any_floor_exists_is_not_hidden():
    store = MemoryStore()
    index = ExpiryIndex(store, FixedClock(NOW))
    index.put(ref("expired"), NOW - 40 * DAY)
    index.put(ref("older"), NOW - 50 * DAY)
    assert ids(index.refs_until(NOW)) == ["prod.expired.www", "prod.older.www"]
    assert store.read_json(store.paths.index_floor("expiry"))[0] == {"floor": "20291121"}


def test_an_index_from_before_floors_is_listed_once_then_served_from_the_floor():
    store = ListCounting()
    for days_left, service in ((-30, "expired"), (5, "soon")):
        at = NOW + days_left * DAY
        store.write_json(store.paths.expiry_entry(at.strftime("%Y%m%d"), ref(service)),
                         {"not_after": at.isoformat()}, cas=None)
    index = ExpiryIndex(store, FixedClock(NOW))
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.expired.www", "prod.soon.www"]
    assert store.listed[0] == "system/expiry/"
    store.listed.clear()
    assert ids(index.refs_until(NOW + 7 * DAY)) == ["prod.expired.www", "prod.soon.www"]
    assert "system/expiry/" not in store.listed


def test_tidy_raises_the_floor_past_emptied_days_but_never_above_the_safe_bound():
    store = MemoryStore()
    clock = FixedClock(NOW)
    index = ExpiryIndex(store, clock)
    index.put(ref("expired"), NOW - 20 * DAY)
    index.put(ref("later"), NOW + 60 * DAY)
    floor = store.paths.index_floor("expiry")
    assert index.days.tidy() == "20291221"
    index.remove(ref("expired"), NOW - 20 * DAY)
    assert index.days.tidy() == "20300108"  # oldest entry is later: the safe bound wins
    assert store.read_json(floor)[0] == {"floor": "20300108"}
    clock.advance(10 * DAY)
    assert index.days.tidy() == "20300118"
    assert ids(index.refs_until(clock.now() + 60 * DAY)) == ["prod.later.www"]


def test_a_writer_lowering_the_floor_during_tidy_wins():
    store = MemoryStore()
    clock = FixedClock(NOW)
    index = ExpiryIndex(store, clock)
    index.put(ref("later"), NOW + 60 * DAY)
    index.put(ref("expired"), NOW - 20 * DAY)
    index.days.tidy()
    index.remove(ref("expired"), NOW - 20 * DAY)  # the next tidy would raise the floor
    listed = store.list

    def list_then_file_an_old_entry(logical: str) -> list[str]:
        names = listed(logical)
        if logical == "system/expiry/" and not store.versions(
                store.paths.expiry_entry("20291201", ref("late-comer"))):
            index.put(ref("late-comer"), dt.datetime(2029, 12, 1, tzinfo=dt.timezone.utc))
        return names

    store.list = list_then_file_an_old_entry  # type: ignore[method-assign]
    index.days.tidy()  # listed before the late-comer was filed: its raise must lose
    assert ids(index.refs_until(NOW)) == ["prod.late-comer.www"]


def test_a_window_longer_than_the_span_limit_lists_the_root():
    store = ListCounting()
    days = DayFolders(store, "expiry", store.paths.expiry_dir(), clock=FixedClock(NOW),
                      max_span_days=10)
    index = ExpiryIndex(store, FixedClock(NOW))
    index.days = days
    index.put(ref("far"), NOW + 300 * DAY)
    list(index.refs_until(NOW))
    store.listed.clear()
    assert ids(index.refs_until(NOW + 365 * DAY)) == ["prod.far.www"]
    assert store.listed == ["system/expiry/", "system/expiry/20301106/"]


def test_due_hints_filed_in_the_past_are_found_without_listing_the_root():
    store = ListCounting()
    due = DueIndex(store, clock=FixedClock(NOW))
    due.put(ref("overdue"), NOW - 10 * DAY)
    due.put(ref("future"), NOW + 30 * DAY)
    assert [h.ref.id for h in due.due(NOW, limit=10)] == ["prod.overdue.www"]
    store.listed.clear()
    assert [h.ref.id for h in due.due(NOW, limit=10)] == ["prod.overdue.www"]
    assert "system/schedule/" not in store.listed
