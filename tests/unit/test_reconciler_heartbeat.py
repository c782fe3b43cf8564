"""Reconciler heartbeats: each process records its last tick and sweep, the API exports
them, departed processes are forgotten, and a failed heartbeat never stops the work."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from certlocker.clock import FixedClock
from certlocker.errors import VaultUnavailable
from certlocker.lifecycle.records.due_index import DueIndex
from certlocker.lifecycle.records.heartbeat import FORGET_AFTER, Heartbeats, process_name, recorded
from certlocker.lifecycle.reconciler import Options, Reconciler
from certlocker.lifecycle.service import CertificateService
from certlocker.metrics.collector import InventoryCollector, exposition
from certlocker.metrics.summary import SummaryCache
from certlocker.names import component
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore
from tests.support.pools import certificate_pools, threads

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_the_process_name_is_a_path_component() -> None:
    assert component("reconciler", process_name()) == process_name()


def test_ticks_and_sweeps_are_recorded_per_process() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    a = Heartbeats(store, clock, name="host-a-1")
    b = Heartbeats(store, clock, name="host-b-2")
    a.beat(swept=True)
    clock.advance(dt.timedelta(seconds=60))
    a.beat()
    b.beat()
    [first, second] = recorded(store)
    assert {first.name, second.name} == {"host-a-1", "host-b-2"}
    beat_a = next(x for x in (first, second) if x.name == "host-a-1")
    assert beat_a.last_tick_at == T0 + dt.timedelta(seconds=60)
    assert beat_a.last_sweep_at == T0  # the sweep time stays until the next sweep
    assert beat_a.started_at == T0
    assert sorted(x.name for x in recorded(store, since=T0 + dt.timedelta(seconds=60))) == [
        "host-a-1", "host-b-2"]
    assert recorded(store, since=T0 + dt.timedelta(seconds=61)) == []


def test_junk_under_the_folder_is_skipped() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    Heartbeats(store, clock, name="good-1").beat()
    store.write_json("system/reconcilers/broken-2", {"name": "broken-2"}, cas=None)
    store.write_json("system/reconcilers/Not_A_Name", {"whatever": 1}, cas=None)
    assert [b.name for b in recorded(store)] == ["good-1"]


def test_departed_processes_are_forgotten_after_a_week_the_living_are_not() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    Heartbeats(store, clock, name="gone-1").beat()
    clock.advance(dt.timedelta(days=1))
    Heartbeats(store, clock, name="quiet-2").beat()
    clock.advance(FORGET_AFTER)
    me = Heartbeats(store, clock, name="me-3")
    me.beat()
    me.forget_departed()
    assert sorted(b.name for b in recorded(store)) == ["me-3", "quiet-2"]
    clock.advance(dt.timedelta(days=1, seconds=1))
    me.beat()
    me.forget_departed()
    assert [b.name for b in recorded(store)] == ["me-3"]


def test_a_failed_heartbeat_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Down(MemoryStore):
        def write_json(self, *args: object, **kwargs: object) -> int:
            raise VaultUnavailable("Vault is sealed")

    with caplog.at_level(logging.WARNING):
        Heartbeats(Down(), FixedClock(T0), name="x-1").beat()
    assert "reconcile.heartbeat_failed" in caplog.messages


def test_the_reconciler_beats_after_each_tick_and_marks_finished_sweeps() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    due = DueIndex(store, clock=clock)
    service = CertificateService(store, {"test": MemoryIssuer(not_before=T0)}, clock=clock,
                                 pools=certificate_pools(1), due_index=due)
    beats = Heartbeats(store, clock, name="rec-1")
    reconciler = Reconciler(store, service, due, clock=clock, options=Options(workers=1),
                            pool=threads(1, "reconcile"),
                            heartbeats=beats)
    try:
        reconciler.run_once()  # a full sweep, then a tick
        [after_sweep] = recorded(store)
        assert after_sweep.last_sweep_at == T0 and after_sweep.last_tick_at == T0
        clock.advance(dt.timedelta(seconds=60))
        reconciler.tick()
        reconciler._beat()  # what run() does after each tick
        [later] = recorded(store)
        assert later.last_tick_at == T0 + dt.timedelta(seconds=60)
        assert later.last_sweep_at == T0
    finally:
        reconciler.close()


def test_the_heartbeats_are_exported() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    Heartbeats(store, clock, name="rec-1").beat(swept=True)
    Heartbeats(store, clock, name="rec-2").beat()
    collector = InventoryCollector(SummaryCache(lambda: [], max_age=60),
                                   reconcilers=SummaryCache(lambda: recorded(store), 60))
    text = exposition(collector).decode()
    ticks = [line for line in text.splitlines()
             if line.startswith("certlocker_reconciler_last_tick_timestamp_seconds{")]
    sweeps = [line for line in text.splitlines()
              if line.startswith("certlocker_reconciler_last_sweep_timestamp_seconds{")]
    assert len(ticks) == 2 and len(sweeps) == 1
    assert 'reconciler="rec-1"' in sweeps[0]
    assert float(sweeps[0].rsplit(" ", 1)[1]) == T0.timestamp()


def test_the_reconcilers_failure_counts_reach_metrics_through_its_heartbeat() -> None:
    """The reconciler serves no /metrics: what failed in it is counted in its heartbeat
    record, which the API's /metrics reads."""
    from certlocker.errors import IssuanceFailed
    from certlocker.models import CertificateRef, CertificateSpec

    store, clock = MemoryStore(), FixedClock(T0)
    due = DueIndex(store, clock=clock)
    issuer = MemoryIssuer(not_before=T0)
    issuer.fail_with = IssuanceFailed("cannot reach the CA (connection refused)")
    service = CertificateService(store, {"test": issuer}, clock=clock, pools=certificate_pools(1),
                                 due_index=due)
    reconciler = Reconciler(store, service, due, clock=clock, options=Options(workers=1),
                            pool=threads(1, "reconcile"),
                            heartbeats=Heartbeats(store, clock, name="rec-1"))
    store.create_spec(CertificateSpec(CertificateRef("dev", "svc", "a"), ("a.test",), "test"))
    try:
        reconciler.run_once()
        clock.advance(dt.timedelta(days=1))  # past the backoff: tried and failed again
        reconciler.tick()
        reconciler._beat()
    finally:
        reconciler.close()
        service.shutdown()
    [beat] = recorded(store)
    assert beat.failures["issuance"] == 2 and beat.failures["tick"] == 0
    collector = InventoryCollector(SummaryCache(lambda: [], max_age=60),
                                   reconcilers=SummaryCache(lambda: recorded(store), 60))
    text = exposition(collector).decode()
    assert ('certlocker_reconciler_failures_total{kind="issuance",reconciler="rec-1"} 2.0'
            in text.splitlines())
