"""The rolling sweep (docs/decisions/0007-steady-sweep.md): its budget, its cursor shared
in the store, and a reconciler whose idle load per tick is the same at 1k and 10k."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from certlocker.clock import FixedClock
from certlocker.errors import Conflict
from certlocker.lifecycle.policy import sweep_budget
from certlocker.lifecycle.policy.sweep_budget import Cursor
from certlocker.lifecycle.records.due_index import DueIndex, slot_of
from certlocker.lifecycle.records.expiry_index import ExpiryIndex
from certlocker.lifecycle.reconciler import Options, Reconciler
from certlocker.lifecycle.rolling_sweep import RollingSweep, Step
from certlocker.lifecycle.service import CertificateService
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, State)
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore
from tests.support.pools import certificate_pools, threads

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
MINUTE = dt.timedelta(minutes=1)


# -- the budget, pure --------------------------------------------------------------------

@pytest.mark.parametrize("cursor, now, expected", [
    # never stepped: one tick's worth, at least a minute's
    (Cursor(), T0, 600.0),
    # credit grows with the time since the last step, by any replica
    (Cursor(stepped_at=T0, credit=0.0), T0 + dt.timedelta(seconds=30), 300.0),
    # a step that overspent (a long listing) waits until the debt is paid
    (Cursor(stepped_at=T0, credit=-100.0), T0 + dt.timedelta(seconds=10), 0.0),
    # a reconciler that was down for a day comes back with two ticks' worth, no burst
    (Cursor(stepped_at=T0, credit=0.0), T0 + dt.timedelta(days=1), 1200.0),
    # a replica whose clock is behind the last step's gets nothing more, never less
    (Cursor(stepped_at=T0, credit=50.0), T0 - MINUTE, 50.0),
])
def test_credit(cursor: Cursor, now: dt.datetime, expected: float) -> None:
    assert sweep_budget.credit(cursor, now, 600, 60) == pytest.approx(expected)


def test_visits_leave_room_for_the_cursor_read_and_write() -> None:
    assert sweep_budget.visits(600) == (600 - 2) // sweep_budget.REQUESTS_PER_VISIT
    assert sweep_budget.visits(5) == 0
    assert sweep_budget.visits(-50) == 0
    assert sweep_budget.spent(119, 3) == 2 + 3 + 5 * 119 <= 600


def test_a_pass_over_100k_at_the_default_budget_takes_hours_not_a_burst() -> None:
    assert 10 < sweep_budget.pass_hours(100_000, 600) < 15


def test_the_cursor_survives_its_document_and_a_broken_one_starts_over() -> None:
    c = Cursor(after=("dev", "svc", "c7"), pass_started=T0, stepped_at=T0 + MINUTE,
               credit=-3.5, visited=7, last_pass=12, last_pass_seconds=3600.0, passes=2)
    assert Cursor.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert Cursor.from_json(Cursor().begin(T0).to_json()).after == ()
    assert Cursor.from_json({"after": "no-slashes"}) == Cursor()
    assert Cursor.from_json({"stepped_at": "2030-01-01T00:00:00"}) == Cursor()  # naive
    assert Cursor.from_json(None) == Cursor()


def test_a_finished_pass_waits_for_the_minimum_pass_time_from_its_start() -> None:
    c = Cursor().begin(T0).advance(("a", "b", "c"), 5, 0.0, T0 + MINUTE)
    done = c.finish(T0 + 2 * MINUTE, dt.timedelta(hours=1))
    assert not done.running and done.last_pass == 5 and done.passes == 1
    assert not done.may_start(T0 + 59 * MINUTE)
    assert done.may_start(T0 + 60 * MINUTE)


# -- the cursor in the store ---------------------------------------------------------------

def refs_in(store: MemoryStore, count: int, per_service: int = 10) -> list[CertificateRef]:
    refs = [CertificateRef("dev", f"s{i // per_service:03d}", f"c{i:04d}") for i in range(count)]
    for r in refs:
        store.seed(store.paths.spec(r), json.dumps({"dns_names": [f"{r.name}.test"],
                                                    "issuer": "test"}))
    store.seed(store.paths.spec(CertificateRef("dev", "s000", "c0000")).replace(
        "dev/s000/c0000", "_system/signing-keys"), "{}")  # an administrator's document
    return refs


def test_replicas_share_the_cursor_each_slice_once_and_the_pass_ends_where_it_began() -> None:
    clock = FixedClock(T0)
    store = MemoryStore(clock=clock)
    refs = refs_in(store, 95)
    per_minute = sweep_budget.visits(60)  # 11: (60 - 2) // 5; two replicas, taking turns
    a, b = (RollingSweep(store, budget_per_minute=60, clock=clock) for _ in range(2))
    seen: list[CertificateRef] = []
    first = a.step(60, start=True)
    assert first.began and len(first.refs) == per_minute
    seen += first.refs
    replica = b
    while True:
        clock.advance(MINUTE)
        step = replica.step(60)
        seen += step.refs
        if step.finished:
            break
        # a new service's listing costs a request; the bucket keeps what a step left
        assert per_minute - 1 <= len(step.refs) <= per_minute + 1
        replica = a if replica is b else b
    assert seen == refs  # in specs/ order, none twice, none left out
    cursor = a.cursor()
    assert (cursor.running, cursor.last_pass, cursor.passes) == (False, 95, 1)
    clock.advance(MINUTE)
    assert a.step(60).refs == ()  # the next pass waits for the hour since this one began
    assert b.step(60, start=True).began  # unless a reconciler starts: it begins one


def test_an_empty_minute_claims_nothing_and_writes_nothing() -> None:
    clock = FixedClock(T0)
    store = MemoryStore(clock=clock)
    refs_in(store, 50)
    sweep = RollingSweep(store, budget_per_minute=60, clock=clock)
    assert sweep.step(60, start=True).refs
    store.calls.clear()
    assert sweep.step(60) == Step()  # no time has passed: no credit
    assert store.calls["write"] == 0 and store.calls["read"] == 1


class RacingStore(MemoryStore):
    """Lets another replica step between this replica's cursor read and its write."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock=clock)
        self.before_write = None

    def write(self, logical, data, cas):  # type: ignore[no-untyped-def, override]
        hook, self.before_write = self.before_write, None
        if hook is not None and logical == self.paths.sweep_cursor():
            hook()
        return super().write(logical, data, cas)


def test_of_two_replicas_stepping_at_once_one_claims_the_slice() -> None:
    clock = FixedClock(T0)
    store = RacingStore(clock)
    refs = refs_in(store, 40)
    a, b = (RollingSweep(store, budget_per_minute=60, clock=clock) for _ in range(2))
    won: list = []
    store.before_write = lambda: won.append(b.step(60, start=True))
    lost = a.step(60, start=True)
    assert lost.refs == () and lost.cursor is None  # its check-and-set failed
    n = sweep_budget.visits(60)
    assert list(won[0].refs) == refs[:n]
    clock.advance(MINUTE)
    assert list(a.step(60).refs) == refs[n:2 * n]  # and it carries on after b's slice
    with pytest.raises(Conflict):
        store.write_json(store.paths.sweep_cursor(), {}, cas=1)


# -- the reconciler: flat per tick ----------------------------------------------------------

def idle_fleet(size: int, budget: float) -> tuple[Reconciler, MemoryStore, FixedClock,
                                                  CertificateService]:
    """``size`` valid certificates, none due, each with its due and expiry entries."""
    clock = FixedClock(T0)
    store = MemoryStore(clock=clock)
    due = DueIndex(store, clock=clock)
    expiry = ExpiryIndex(store, clock)
    renew_at = "system/schedule/{}/{}/".format(*slot_of(T0 + dt.timedelta(days=50)))
    not_after = T0 + dt.timedelta(days=80)
    clock.advance(-dt.timedelta(days=1))  # written long before the reconcilers below
    for i in range(size):
        r = CertificateRef("dev", f"s{i // 100:04d}", f"c{i}")
        name = f"{r.name}.{r.service}.test"
        spec = CertificateSpec(r, (name,), "test")
        status = CertificateStatus(State.VALID, current=CertificateInfo(
            serial="1", not_before=not_after - dt.timedelta(days=90), not_after=not_after,
            sha256_fingerprint="ab", issuer="CN=x", dns_names=(name,), issuer_name="test",
            key_type="ec-p256"), updated_at=T0)
        store.seed(store.paths.spec(r), json.dumps(spec.to_json()))
        store.seed(store.paths.status(r), json.dumps(status.to_json()))
        store.seed(renew_at + r.id, json.dumps({"at": "x"}))
        store.seed(store.paths.expiry_entry(not_after.strftime("%Y%m%d"), r),
                   json.dumps({"not_after": not_after.isoformat()}))
    clock.advance(dt.timedelta(days=1))
    for days in (due.days, expiry.days):
        days.tidy()
    service = CertificateService(store, {"test": MemoryIssuer(not_before=T0)}, clock=clock,
                                 pools=certificate_pools(2), due_index=due)
    reconciler = Reconciler(store, service, due, pool=threads(4, "reconcile"), clock=clock,
                            options=Options(workers=4, sweep_budget=budget))
    return reconciler, store, clock, service


def requests(store: MemoryStore) -> int:
    return sum(store.calls[k] for k in ("read", "write", "destroy", "list"))


@pytest.mark.parametrize("size", [1_000, 10_000])
def test_an_idle_minute_costs_the_same_at_1k_and_10k(size: int) -> None:
    reconciler, store, clock, service = idle_fleet(size, budget=600)
    try:
        per_minute = []
        for _ in range(4):
            store.calls.clear()
            report = reconciler.rolling_step()
            reconciler.tick()
            per_minute.append((report.handled, requests(store)))
            clock.advance(MINUTE)
        # the same slice each minute whatever the inventory, each visit a few reads
        # (spec, status, expiry entry, due hint), nothing written
        n = sweep_budget.visits(600)
        assert all(n <= h <= n + 1 for h, _ in per_minute), per_minute
        assert all(n <= 600 + 10 for _, n in per_minute[1:]), per_minute
        assert store.calls["write"] <= 1  # the cursor's
    finally:
        reconciler.close()
        service.shutdown()


def test_without_a_budget_the_full_sweep_reads_everything_at_once() -> None:
    """The behaviour before 0007 (``sweep_budget`` 0), for comparison: one tick of the
    start-up sweep reads all of a 1k inventory."""
    reconciler, store, clock, service = idle_fleet(1_000, budget=0)
    try:
        store.calls.clear()
        reconciler.start_sweep()
        assert reconciler.sweep_step(None).handled == 1_000
        assert requests(store) >= 4 * 1_000
    finally:
        reconciler.close()
        service.shutdown()


def test_the_rolling_sweep_refiles_a_lost_hint_within_its_pass() -> None:
    reconciler, store, clock, service = idle_fleet(300, budget=600)
    try:
        lost = CertificateRef("dev", "s0002", "c250")  # in the pass's second minute
        [hint] = [p for p in store._data if p.startswith("system/schedule/")
                  and p.endswith(lost.id)]
        store.destroy(hint)
        store.destroy(store.paths.expiry_entry(
            (T0 + dt.timedelta(days=80)).strftime("%Y%m%d"), lost))
        finished = False
        for _ in range(3):
            reconciler.rolling_step()
            finished = finished or reconciler._swept
            clock.advance(MINUTE)
        assert finished
        assert store.versions(hint) == 1  # filed again, where it was
        assert ExpiryIndex(store, clock).exists(lost, T0 + dt.timedelta(days=80))
    finally:
        reconciler.close()
        service.shutdown()


def test_a_restarted_reconciler_finds_specs_written_while_none_ran_without_a_full_sweep() -> None:
    """Mid-pass, a start does not sweep the inventory again: the spec watch looks back to
    the last step any reconciler took, so a spec written meanwhile is issued at once."""
    from certlocker.lifecycle.spec_watch import SpecWatch
    from tests.support.memory_store import grant

    first, store, clock, service = idle_fleet(1_000, budget=600)
    try:
        first.rolling_step()  # the pass began; 851 certificates still ahead of it
        first.close()
        clock.advance(dt.timedelta(minutes=30))  # no reconciler runs meanwhile
        late = CertificateSpec(CertificateRef("dev", "zzz", "late"), ("late.zzz.test",),
                               "test")
        store.create_spec(late)
        grant(store, late)
        clock.advance(dt.timedelta(minutes=5))
        again = Reconciler(store, service, DueIndex(store, clock=clock),
                           pool=threads(2, "reconcile"), clock=clock,
                           options=Options(workers=2, sweep_budget=600),
                           watch=SpecWatch(store, clock.now()))
        try:
            # the pass goes on (two ticks' worth of credit at most), it does not start over
            assert again.rolling_step().handled == sweep_budget.visits(1200 - 3)
            assert again.watch_step().outcomes == {"issued": 1}
            assert store.versions(store.paths.cert(late.ref)) == 1
        finally:
            again.close()
    finally:
        service.shutdown()
