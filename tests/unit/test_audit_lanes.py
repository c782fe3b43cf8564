"""Audit lanes: writers that meet in a lane spread out, every lane is verified on its own,
and queries merge the lanes newest first."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from certlocker.audit.chain import AuditEvent, AuditLog, query, verify_lanes
from certlocker.audit.memory import MemoryAuditStore
from certlocker.clock import FixedClock
from certlocker.errors import Conflict
from tests.support.threads import run_together

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


class _CountingStore(MemoryAuditStore):
    def __init__(self) -> None:
        super().__init__()
        self.refused = 0
        self.reads = 0

    def read(self, seq: int) -> AuditEvent | None:
        self.reads += 1
        return super().read(seq)

    def append(self, event: AuditEvent, expected_seq: int) -> None:
        try:
            super().append(event, expected_seq)
        except Conflict:
            self.refused += 1
            raise


def _round_robin(logs: list[AuditLog], rounds: int) -> None:
    for r in range(rounds):
        for n, log in enumerate(logs):
            log.record(f"p{n}", "credential.mint", f"s{r}", "success")


def test_writers_that_start_in_one_lane_spread_out_and_then_only_write() -> None:
    random.seed(7)
    lanes = [_CountingStore() for _ in range(16)]
    logs = [AuditLog(lanes, FixedClock(T0), lane=0) for _ in range(4)]
    _round_robin(logs, 10)
    assert len({log.lane for log in logs}) == 4
    refused, reads = sum(s.refused for s in lanes), sum(s.reads for s in lanes)
    _round_robin(logs, 20)
    assert sum(s.refused for s in lanes) == refused  # settled: no writer meets another
    assert sum(s.reads for s in lanes) == reads  # and none looks ahead any more
    assert all(r.result.ok for r in verify_lanes(lanes))
    assert sum(len(s.events) for s in lanes) == 4 * 30


def test_more_writers_than_lanes_stop_moving_and_the_lanes_stay_linked() -> None:
    lanes = [MemoryAuditStore() for _ in range(2)]
    logs = [AuditLog(lanes, FixedClock(T0)) for _ in range(3)]
    _round_robin(logs, 40)
    assert all(log._moves <= len(lanes) for log in logs)
    results = verify_lanes(lanes)
    assert all(r.result.ok for r in results)
    assert sum(r.result.checked for r in results) == 120


def test_threads_of_several_processes_over_lanes_lose_nothing() -> None:
    lanes = [MemoryAuditStore() for _ in range(4)]
    logs = [AuditLog(lanes, FixedClock(T0), lane=0) for _ in range(3)]

    def writer(n: int) -> None:
        for i in range(30):
            logs[n % 3].record(f"t{n}", "certificate.issue", f"c{i}", "success")

    assert run_together(6, writer) == []
    events = [e for s in lanes for e in s.events.values()]
    assert len(events) == 180
    assert {(e.actor, e.subject) for e in events} == {
        (f"t{n}", f"c{i}") for n in range(6) for i in range(30)}
    assert all(r.result.ok for r in verify_lanes(lanes))


def test_query_merges_the_lanes_newest_first_and_names_each_lane() -> None:
    lanes = [MemoryAuditStore() for _ in range(3)]
    clock = FixedClock(T0)
    logs = [AuditLog(lanes, clock, lane=n) for n in range(3)]
    for minute in range(12):
        logs[minute % 3].record("alice", "spec.create" if minute % 2 else "credential.mint",
                                f"s{minute}", "success")
        clock.advance(dt.timedelta(minutes=1))
    newest = query(lanes, limit=5)
    assert [e.subject for e in newest] == ["s11", "s10", "s9", "s8", "s7"]
    assert [e.lane for e in newest] == [2, 1, 0, 2, 1]
    assert [e.subject for e in query(lanes, action="spec.create", limit=3)] == [
        "s11", "s9", "s7"]
    window = query(lanes, since=T0 + dt.timedelta(minutes=3),
                   until=T0 + dt.timedelta(minutes=5))
    assert [(e.lane, e.seq) for e in window] == [(2, 2), (1, 2), (0, 2)]
    assert newest[0].to_view()["lane"] == 2 and "lane" not in newest[0].to_json()


def test_query_reads_only_as_far_as_the_merge_needs() -> None:
    lanes = [_CountingStore() for _ in range(4)]
    clock = FixedClock(T0)
    logs = [AuditLog(lanes, clock, lane=n) for n in range(4)]
    for i in range(200):
        logs[i % 4].record("alice", "credential.mint", f"s{i}", "success")
        clock.advance(dt.timedelta(seconds=1))
    for s in lanes:
        s.reads = 0
    assert len(query(lanes, limit=10)) == 10
    assert sum(s.reads for s in lanes) <= 10 + len(lanes)


def test_verify_names_the_broken_lane_and_checks_each_lane_against_its_anchor() -> None:
    lanes = [MemoryAuditStore() for _ in range(3)]
    logs = [AuditLog(lanes, FixedClock(T0), lane=n) for n in range(2)]
    _round_robin(logs, 5)
    log = logs[0]
    anchors = log.heads()
    assert set(anchors) == {0, 1}
    assert all(r.result.ok for r in log.verify(anchors))
    edited = lanes[1].events[3]
    lanes[1].events[3] = AuditEvent(**{**edited.to_json(), "actor": "mallory"})
    del lanes[0].events[5]
    lanes[0].head_pointer = (4, lanes[0].events[4].hash)
    results = {r.lane: r.result for r in log.verify(anchors)}
    assert results[1].first_bad_seq == 3 and "edited" in (results[1].problem or "")
    assert not results[0].ok and "truncated" in (results[0].problem or "")
    assert results[2].ok and results[2].checked == 0
    assert {r.lane: r.result.ok for r in log.verify()} == {0: True, 1: False, 2: True}
    with pytest.raises(ValueError, match="no audit lane 3"):
        log.verify({3: (1, "0" * 64)})
