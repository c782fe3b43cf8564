"""The spec watch: specs written straight into Vault are found between sweeps, over an
honest in-memory store whose ``spec_versions`` answers as OpenBao's SCAN does."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from certlocker.clock import FixedClock
from certlocker.errors import AccessDenied
from certlocker.lifecycle.reconciler import ISSUED, Options, Reconciler
from certlocker.lifecycle.spec_watch import SpecWatch, WatchOptions
from certlocker.models import CertificateSpec, State
from tests.support.memory_store import MemoryStore
from tests.support.pools import threads
from tests.unit.test_reconciler import World, ref, spec

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


class Ticks:
    """A monotonic clock the test moves; a source call may advance it (a slow Vault)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rewrite(store: MemoryStore, s: CertificateSpec) -> None:
    """As ``bao kv put`` on an existing spec: a new version, no check-and-set."""
    store.write(store.paths.spec(s.ref), s.to_json(), cas=None)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store(clock: FixedClock) -> MemoryStore:
    return MemoryStore(clock=clock)


def test_reports_specs_written_since_start_once(store, clock):
    clock.advance(-dt.timedelta(hours=1))
    store.create_spec(spec("old"))  # before the reconciler started: the sweep's
    clock.advance(dt.timedelta(hours=1))
    ticks = Ticks()
    watch = SpecWatch(store, T0, monotonic=ticks)
    assert watch.poll() == []
    clock.advance(dt.timedelta(seconds=10))
    store.create_spec(spec("new"))
    ticks.now += 20
    changes = watch.poll()
    assert [(c.ref, c.version, c.rewritten) for c in changes] == [(ref("new"), 1, False)]
    ticks.now += 20
    assert watch.poll() == []  # reported once, though still inside the overlap


def test_a_rewritten_spec_is_reported_again(store, clock):
    watch = SpecWatch(store, T0, monotonic=Ticks())
    store.create_spec(spec(1))
    assert [c.version for c in watch.poll()] == [1]
    clock.advance(dt.timedelta(minutes=5))
    rewrite(store, spec(1, dns_names=("c1.test", "www.c1.test")))
    changes = watch.poll()
    assert [(c.ref, c.version, c.rewritten) for c in changes] == [(ref(1), 2, True)]


def test_a_write_seen_late_inside_the_overlap_is_not_missed(store, clock):
    """A write stamped before the newest one seen, but visible only later (a concurrent
    commit, a standby behind): the watch looks back ``overlap`` behind its high mark."""
    watch = SpecWatch(store, T0, monotonic=Ticks())
    clock.advance(dt.timedelta(seconds=30))
    store.create_spec(spec("a"))
    watch.poll()
    clock.advance(dt.timedelta(seconds=-20))  # stamped 20 s before "a"
    store.create_spec(spec("late"))
    assert [c.ref for c in watch.poll()] == [ref("late")]


def test_the_watch_keeps_its_share_of_the_wall_clock(store):
    """A scan that takes 5 s (a large inventory) pushes the next one 50 s away at a
    10% share, not 20 s: Vault's load stays bounded, the latency grows instead."""
    ticks = Ticks()
    slow = store.spec_versions

    def spec_versions():
        ticks.now += 5.0
        return slow()

    store.spec_versions = spec_versions  # type: ignore[method-assign]
    watch = SpecWatch(store, T0, WatchOptions(interval=20.0, max_share=0.1), monotonic=ticks)
    watch.poll()
    assert not watch.due() and watch.seconds_until_due() == pytest.approx(45.0)
    ticks.now += 45.0
    assert watch.due()


def test_vault_without_scan_lists_new_specs_only(store, clock):
    store.scans = False
    store.create_spec(spec("before"))
    ticks = Ticks()
    watch = SpecWatch(store, T0, WatchOptions(fallback_interval=300.0), monotonic=ticks)
    assert watch.poll() == [] and not watch.scanning
    assert watch.seconds_until_due() == 300.0
    store.create_spec(spec("new"))
    rewrite(store, spec("before", dns_names=("other.test",)))
    assert [(c.ref, c.version) for c in watch.poll()] == [(ref("new"), None)]
    assert store.calls["spec_versions"] == 1  # it asked once, then only listed


def test_a_refused_scan_falls_back_and_is_tried_again_later(store):
    ticks = Ticks()
    refused = [True]
    scan = store.spec_versions

    def spec_versions():
        if refused[0]:
            raise AccessDenied("Vault denied access to certlocker/detailed-metadata/specs/")
        return scan()

    store.spec_versions = spec_versions  # type: ignore[method-assign]
    watch = SpecWatch(store, T0, WatchOptions(rescan_after=3600.0), monotonic=ticks)
    assert watch.poll() == [] and not watch.scanning
    store.create_spec(spec("listed"))
    ticks.now += 300
    assert [c.ref for c in watch.poll()] == [ref("listed")]
    refused[0] = False  # the policy was updated (certlocker bootstrap vault)
    ticks.now += 3600
    watch.poll()
    assert watch.scanning


def test_keys_that_name_no_certificate_are_left_alone(store):
    watch = SpecWatch(store, T0, monotonic=Ticks())
    store.write("specs/dev/svc/_credentials", {"x": 1}, cas=None)
    store.write("specs/dev/svc/deep/er", {"x": 1}, cas=None)
    store.write("specs/dev/svc/Bad Name", {"x": 1}, cas=None)
    assert watch.poll() == []


# -- in the reconciler ----------------------------------------------------------------

def watching_world(clock: FixedClock) -> tuple[World, Reconciler]:
    w = World(store=MemoryStore(clock=clock), clock=clock)
    r = Reconciler(w.store, w.service, w.due, clock=clock, options=Options(workers=2),
                   pool=threads(2, "reconcile"),
                   watch=SpecWatch(w.store, clock.now(), monotonic=Ticks()))
    return w, r


def test_a_spec_written_into_vault_is_issued_by_the_watch_without_a_sweep(clock):
    w, r = watching_world(clock)
    try:
        r.watch_step()
        w.declare_in_vault(spec(1))
        report = r.watch_step()
        assert report.outcomes == {ISSUED: 1}
        assert w.status(1).state == State.VALID
    finally:
        r.close()
        w.close()


def test_a_rewritten_spec_clears_the_backoff_of_an_earlier_failure(clock):
    w, r = watching_world(clock)
    try:
        w.declare_in_vault(spec(1, issuer="missing"))  # no such issuer: fails
        r.watch_step()
        failed = w.status(1)
        assert failed.state == State.FAILED and failed.next_attempt_at is not None
        clock.advance(dt.timedelta(seconds=30))  # still inside the backoff
        rewrite(w.store, spec(1))  # the operator fixes the issuer
        report = r.watch_step()
        assert report.outcomes == {ISSUED: 1}
        assert w.status(1).state == State.VALID
    finally:
        r.close()
        w.close()


def test_a_backoff_set_after_the_rewrite_stays(clock):
    """The watch saw the rewrite late: the new spec had already failed since, and its
    backoff is kept (no hammering of a CA that refuses the new spec too)."""
    w, r = watching_world(clock)
    try:
        w.declare_in_vault(spec(1, issuer="missing"))
        r.watch_step()
        clock.advance(dt.timedelta(seconds=30))
        rewrite(w.store, spec(1, issuer="missing", dns_names=("other.test",)))
        clock.advance(dt.timedelta(seconds=1))
        backoff_until = T0 + dt.timedelta(hours=1)
        status, version = w.store.read_status(ref(1))  # type: ignore[misc]
        w.store.write_status(ref(1), status.replace(
            next_attempt_at=backoff_until, updated_at=clock.now()), cas=version)
        r.watch_step()
        after = w.status(1)
        assert after.attempts == status.attempts and after.next_attempt_at == backoff_until
    finally:
        r.close()
        w.close()


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_the_loop_watches_between_ticks(clock):
    """``run`` with a tick interval of an hour still handles a spec written after its
    start-up sweep, within one watch interval."""
    w, _ = watching_world(clock)
    r = Reconciler(w.store, w.service, w.due, pool=threads(2, "reconcile"), clock=clock,
                   options=Options(interval=3600.0, jitter=0.0, workers=2),
                   watch=SpecWatch(w.store, clock.now(), WatchOptions(interval=0.05)))
    try:
        thread = threading.Thread(target=r.run, daemon=True)
        thread.start()
        wait_for(lambda: r._sweep is None and not r._sweep_wanted)  # start-up sweep done
        w.declare_in_vault(spec(2))
        wait_for(lambda: (w.store.read_status(ref(2)) or (None,))[0] is not None
                 and w.status(2).state == State.VALID)
        r.stop()
        thread.join(10)
        assert w.status(2).state == State.VALID
    finally:
        r.close()
        w.close()
