"""``cas.patch``: the one check-and-set read-modify-write, over a small honest record."""

from __future__ import annotations

import pytest

from certlocker import cas
from certlocker.errors import Conflict


class Record:
    """One versioned value; ``rivals`` writes by others land just before ours."""

    def __init__(self, value: int | None = None, rivals: int = 0) -> None:
        self.value, self.version, self.rivals = value, 0 if value is None else 1, rivals
        self.reads = self.writes = 0

    def read(self) -> tuple[int | None, int]:
        self.reads += 1
        return self.value, self.version

    def write(self, value: int, cas_version: int) -> None:
        if self.rivals:
            self.rivals -= 1
            self.value, self.version = (self.value or 0) + 100, self.version + 1
        if cas_version != self.version:
            raise Conflict("version moved")
        self.writes += 1
        self.value, self.version = value, self.version + 1


def test_a_lost_race_reapplies_the_change_to_the_winners_record() -> None:
    record = Record(1, rivals=2)
    assert cas.patch(record.read, lambda old: (old or 0) + 1, record.write) == 202
    assert (record.value, record.reads, record.writes) == (202, 3, 1)


def test_every_attempt_lost_raises_conflict_with_the_callers_detail() -> None:
    record = Record(1, rivals=3)
    with pytest.raises(Conflict, match="keeps changing"):
        cas.patch(record.read, lambda old: 5, record.write, attempts=3,
                  conflict="the thing keeps changing")
    assert record.reads == 3 and record.writes == 0


def test_unchanged_returns_its_value_with_nothing_written() -> None:
    record = Record(7)

    def same(old: int | None) -> int:
        raise cas.Unchanged(old)

    assert cas.patch(record.read, same, record.write) == 7
    assert record.writes == 0 and record.version == 1


def test_a_known_record_saves_the_first_read_only() -> None:
    record = Record(1, rivals=1)
    assert cas.patch(record.read, lambda old: (old or 0) * 2, record.write,
                     known=(1, 1)) == 202
    assert record.reads == 1  # the retry read; the first attempt used ``known``


def test_no_record_yet_is_none_at_version_zero() -> None:
    record = Record()
    assert cas.patch(record.read, lambda old: 3 if old is None else -1, record.write) == 3
    assert record.version == 1


def test_again_decides_each_retry_and_then_raises() -> None:
    record = Record(1, rivals=10)
    asked: list[int] = []

    def again(attempt: int) -> bool:
        asked.append(attempt)
        return attempt < 2

    with pytest.raises(Conflict):
        cas.patch(record.read, lambda old: 0, record.write, attempts=99, again=again)
    assert asked == [1, 2]
