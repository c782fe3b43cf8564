"""lifecycle.wakeups: issuances put off to a rate-limit slot come back at that slot in
the process that put them off, with no reconciler (real time, short windows)."""

from __future__ import annotations

import datetime as dt
import threading
import time

from certlocker.clock import SystemClock
from certlocker.lifecycle.governed_issuer import GovernedIssuer, Governance
from certlocker.lifecycle.policy.ratelimits import Limit
from certlocker.lifecycle.records.rate_books import RateBooks
from certlocker.lifecycle.service import CertificateService
from certlocker.lifecycle.wakeups import Wakeups
from certlocker.models import CertificateRef, CertificateSpec, KeyType, State
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore, grant
from tests.support.pools import certificate_pools, threads

S = dt.timedelta(seconds=1)


def test_each_wake_up_comes_at_its_time_earliest_first() -> None:
    clock = SystemClock()
    woken: list[tuple[str, dt.datetime]] = []
    done = threading.Event()

    def wake(ref: CertificateRef) -> None:
        woken.append((ref.name, clock.now()))
        if len(woken) == 3:
            done.set()

    wakeups = Wakeups(threads(1), wake, clock)
    now = clock.now()
    asked = {"late": now + 0.4 * S, "soon": now + 0.2 * S, "past": now - S}
    for name, when in asked.items():
        wakeups.at(CertificateRef("dev", "web", name), when)
    assert done.wait(10)
    assert [name for name, _ in woken] == ["past", "soon", "late"]
    assert all(at >= asked[name] for name, at in woken)
    assert wakeups.pending() == 0


def test_a_stopped_timer_wakes_nobody() -> None:
    woken: list[CertificateRef] = []
    wakeups = Wakeups(threads(1), woken.append, SystemClock())
    wakeups.at(CertificateRef("dev", "web", "x"), SystemClock().now() + 0.2 * S)
    wakeups.stop()
    time.sleep(0.4)
    assert woken == [] and wakeups.pending() == 0


class Timed(MemoryIssuer):
    """Notes when each order was placed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ordered_at: list[float] = []

    def issue(self, request, journal):  # type: ignore[no-untyped-def]
        self.ordered_at.append(time.monotonic())
        return super().issue(request, journal)


def test_certificates_put_off_by_a_limit_are_issued_at_their_slots_without_a_reconciler(
        ) -> None:
    store, clock = MemoryStore(), SystemClock()
    inner = Timed("primary")
    window, margin = 2.0, 0.5  # the CA's window; the margin settings add for the time
    # between a slot and the order reaching the CA, which a loaded machine stretches
    issuer = GovernedIssuer("primary", [inner], RateBooks(
        store, "primary", orders=Limit(2, (window + margin) * S)), clock=clock,
        governance=Governance(max_wait=dt.timedelta(0)))
    refs = []
    for i in range(5):
        ref = CertificateRef("dev", "web", f"c{i}")
        spec = CertificateSpec(ref, (f"c{i}.example.test",), "primary", KeyType.EC_P256)
        store.create_spec(spec)
        grant(store, spec)
        refs.append(ref)
    service = CertificateService(store, {"primary": issuer}, pools=certificate_pools(4),
                                 clock=clock)
    try:
        first = [service.schedule(ref).result(10) for ref in refs]
        assert sum(s.state is State.VALID for s in first) == 2  # the rest put off
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [store.read_status(ref)[0].state for ref in refs]  # type: ignore[index]
            if states == [State.VALID] * 5:
                break
            time.sleep(0.1)
        assert states == [State.VALID] * 5  # nothing but the wake-ups brought them back
    finally:
        service.shutdown()
    times = sorted(inner.ordered_at)  # as the CA sees them: never 3 in its window
    assert all(sum(1 for u in times if t <= u < t + window) <= 2 for t in times)
