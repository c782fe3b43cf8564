"""The reconciler, its due index and its alerts, over an honest in-memory store."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from certlocker.clock import FixedClock
from certlocker.errors import AlertDeliveryFailed, IssuanceFailed, VaultUnavailable
from certlocker.lifecycle.policy import alerts, backoff, planning, reissue
from certlocker.lifecycle.records.due_index import DueIndex, Hint, slot_of
from certlocker.lifecycle.records.expiry_index import ExpiryIndex
from certlocker.lifecycle.reconciler import Options, Reconciler
from certlocker.lifecycle.service import CertificateService
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, KeyType, State)
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore, grant
from tests.support.pools import certificate_pools, threads

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def ref(i: int | str) -> CertificateRef:
    return CertificateRef("dev", "svc", f"c{i}")


def spec(i: int | str, **kw: object) -> CertificateSpec:
    return CertificateSpec(ref(i), kw.pop("dns_names", (f"c{i}.test",)),  # type: ignore[arg-type]
                           kw.pop("issuer", "test"), **kw)  # type: ignore[arg-type]


def info(not_before: dt.datetime, days: int = 90, **kw: object) -> CertificateInfo:
    kw.setdefault("dns_names", ("c1.test",))
    return CertificateInfo(serial="1", not_before=not_before,
                           not_after=not_before + dt.timedelta(days=days),
                           sha256_fingerprint="ab", issuer="CN=x", **kw)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[alerts.Alert] = []
        self.fail = False

    def send(self, alert: alerts.Alert) -> None:
        if self.fail:
            raise AlertDeliveryFailed("down", ("test",))
        self.sent.append(alert)


class World:
    def __init__(self, *, policy: alerts.AlertPolicy = alerts.DEFAULT_POLICY,
                 store: MemoryStore | None = None, issuer: MemoryIssuer | None = None,
                 clock: FixedClock | None = None,
                 backoff_policy: backoff.BackoffPolicy = backoff.DEFAULT_POLICY) -> None:
        self.clock = clock or FixedClock(T0)
        self.store = store or MemoryStore()
        self.issuer = issuer or MemoryIssuer(not_before=T0)
        self.due = DueIndex(self.store, policy, self.clock)
        self.service = CertificateService(self.store, {"test": self.issuer}, clock=self.clock,
                                          pools=certificate_pools(2), due_index=self.due,
                                          backoff_policy=backoff_policy)
        self.alerts = Recorder()
        self.reconciler = Reconciler(self.store, self.service, self.due, notifier=self.alerts,
                                     pool=threads(4, "reconcile"),
                                     clock=self.clock, options=Options(workers=4),
                                     policy=policy)

    def declare_in_vault(self, s: CertificateSpec) -> None:
        """As an operator writing the spec straight into Vault: no status, no hint."""
        self.store.create_spec(s)
        grant(self.store, s)

    def status(self, i: int | str) -> CertificateStatus:
        found = self.store.read_status(ref(i))
        assert found is not None
        return found[0]

    def hints(self) -> list[str]:
        return sorted(p for p in self.store._data if p.startswith("system/schedule/"))

    def close(self) -> None:
        self.reconciler.close()
        self.service.shutdown()


@pytest.fixture
def world():
    w = World()
    yield w
    w.close()


# -- pure parts -------------------------------------------------------------------------

def test_slot_is_the_utc_day_and_minute():
    at = dt.datetime(2030, 1, 2, 3, 4, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert slot_of(at) == ("20300102", "0104")


def test_schedule_paths_are_validated():
    paths = MemoryStore().paths
    assert paths.schedule_entry("20300102", "0104", ref(1)) == \
        "system/schedule/20300102/0104/dev.svc.c1"
    with pytest.raises(ValueError):
        paths.schedule_dir("2030/../x")
    with pytest.raises(ValueError):
        paths.schedule_dir("20300102", "1")


@pytest.mark.parametrize("status, expected", [
    pytest.param(None, T0, id="a spec with no status is due now"),
    pytest.param(CertificateStatus(State.PENDING), T0, id="a pending certificate is due now"),
    pytest.param(CertificateStatus(State.VALID, current=info(T0)),
                 T0 + dt.timedelta(days=60), id="a fresh certificate is next looked at "
                                                "when one third of its lifetime is left"),
    pytest.param(CertificateStatus(State.FAILED, attempts=1,
                                   next_attempt_at=T0 + dt.timedelta(minutes=7)),
                 T0 + dt.timedelta(minutes=7), id="a failing one when its backoff ends"),
    pytest.param(CertificateStatus(State.REVOKED), None, id="a revoked one never"),
])
def test_next_action_at(status, expected):
    assert planning.next_action_at(spec(1), status, T0) == expected


def test_expiry_floor_is_a_candidate_until_alerted():
    renew_late = spec(1, renew_before="1d")
    status = CertificateStatus(State.VALID, current=info(T0))
    floor_at = T0 + dt.timedelta(days=83)  # 7 days before not_after
    assert planning.next_action_at(renew_late, status, T0) == floor_at
    alerted = status.replace(alerted=alerts.EXPIRY_NEAR)
    assert planning.next_action_at(renew_late, alerted, T0) == T0 + dt.timedelta(days=89)


def test_decide_uses_recorded_key_type_and_issuer_name():
    s = spec(1, key_type=KeyType.EC_P384)
    old = CertificateStatus(State.VALID, current=info(T0))  # a record from before the fields
    assert planning.decide(s, old, T0).reason == reissue.UP_TO_DATE
    rec = CertificateStatus(State.VALID, current=info(T0, key_type="ec-p256",
                                                      issuer_name="test"))
    assert planning.decide(s, rec, T0).reason == reissue.KEY_TYPE_CHANGED
    moved = CertificateStatus(State.VALID, current=info(T0, key_type="ec-p384",
                                                        issuer_name="other"))
    assert planning.decide(s, moved, T0).reason == reissue.ISSUER_CHANGED


def test_certificate_info_reads_records_without_the_new_fields():
    data = info(T0).to_json()
    del data["key_type"], data["issuer_name"]
    assert CertificateInfo.from_json(data).key_type is None


def test_alert_evaluation():
    failing = CertificateStatus(State.FAILED, attempts=5, last_error="boom")
    assert alerts.should_send(failing, T0) == alerts.RETRIES_EXHAUSTED
    assert alerts.should_send(failing.replace(alerted=alerts.RETRIES_EXHAUSTED), T0) is None
    near = CertificateStatus(State.VALID, current=info(T0 - dt.timedelta(days=85)))
    assert alerts.should_send(near, T0) == alerts.EXPIRY_NEAR
    assert alerts.should_send(CertificateStatus(State.VALID, current=info(T0)), T0) is None


# -- the reconciler ---------------------------------------------------------------------

def test_a_spec_written_straight_into_vault_is_issued_by_the_start_up_sweep(world):
    world.declare_in_vault(spec(1))
    report = world.reconciler.run_once()
    assert world.issuer.issued == ["dev.svc.c1"]
    st = world.status(1)
    assert st.state == State.VALID
    assert (st.current.key_type, st.current.issuer_name) == ("ec-p256", "test")
    day, minute = slot_of(T0 + dt.timedelta(days=60))
    assert world.hints() == [f"system/schedule/{day}/{minute}/dev.svc.c1"]
    assert report.outcomes.get("issued") == 1
    world.reconciler.run_once()
    assert world.issuer.issued == ["dev.svc.c1"]


def test_renews_what_is_due_and_leaves_the_rest(world):
    world.declare_in_vault(spec(1))
    world.declare_in_vault(spec(2, renew_before="10d"))
    world.reconciler.run_once()
    world.clock.advance(dt.timedelta(days=61))
    report = world.reconciler.tick()
    assert sorted(world.issuer.issued) == ["dev.svc.c1", "dev.svc.c1", "dev.svc.c2"]
    assert report.outcomes == {"issued": 1}
    assert world.store.versions(world.store.paths.cert(ref(1))) == 2
    assert world.store.versions(world.store.paths.cert(ref(2))) == 1


def test_a_changed_spec_is_reissued(world):
    world.declare_in_vault(spec(1))
    world.reconciler.run_once()
    path = world.store.paths.spec(ref(1))
    world.store.write(path, spec(1, key_type=KeyType.EC_P384).to_json(), cas=1)
    world.reconciler.run_once()  # the sweep sees it: spec edits file no hint
    assert world.issuer.issued == ["dev.svc.c1"] * 2
    assert world.status(1).current.key_type == "ec-p384"


def _inventory(size: int, due_every: int) -> tuple[World, list[str]]:
    """``size`` valid certificates with their hints; every ``due_every``-th is due."""
    import json

    store = MemoryStore()
    w = World(store=store)
    fresh = CertificateStatus(State.VALID, current=info(
        T0 - dt.timedelta(days=10), issuer_name="test", key_type="ec-p256",
        dns_names=("NAME",)))
    old = fresh.replace(current=info(T0 - dt.timedelta(days=70), issuer_name="test",
                                     key_type="ec-p256", dns_names=("NAME",)))
    spec_t, fresh_t, old_t = (json.dumps(d) for d in (spec("X", dns_names=("NAME",)).to_json(),
                                                       fresh.to_json(), old.to_json()))
    future = "system/schedule/{}/{}/".format(*slot_of(T0 + dt.timedelta(days=30)))
    past = "system/schedule/{}/{}/".format(*slot_of(T0 - dt.timedelta(days=10)))
    hint = json.dumps({"at": "2030-01-01T00:00:00Z"})
    store.seed(store.paths.grant("dev", "svc"), json.dumps({"zones": ["test"]}))
    due = []
    for i in range(size):
        r, name = ref(i), f"c{i}.test"
        is_due = i % due_every == 0
        store.seed(store.paths.spec(r), spec_t.replace('"cX"', f'"c{i}"').replace("NAME", name))
        store.seed(store.paths.status(r), (old_t if is_due else fresh_t).replace("NAME", name))
        store.seed((past if is_due else future) + r.id, hint)
        if is_due:
            due.append(r.id)
    return w, due


@pytest.mark.parametrize("size", [1_000, 100_000])
def test_a_tick_touches_only_what_is_due(size):
    w, due = _inventory(size, size // 10)
    try:
        for index in (w.due, ExpiryIndex(w.store, w.clock)):
            index.days.tidy()  # as a sweep leaves them: the days holding entries are filed
        w.store.calls.clear()
        report = w.reconciler.tick()
        assert report.outcomes == {"issued": 10}
        assert sorted(w.issuer.issued) == sorted(due)
        # the same for 1,000 and 100,000: per due certificate, the decision and the
        # decision again under the lease read the spec (the issuance goes on from the
        # second read); two listings
        assert w.store.calls["read_spec"] == 2 * 10
        assert w.store.calls["read_status"] <= 10 * 6
        assert w.store.calls["list"] == 2  # the due day's minutes, the due minute
    finally:
        w.close()


def test_a_lost_hint_is_refiled_by_the_sweep(world):
    world.declare_in_vault(spec(1))
    world.reconciler.run_once()
    (good,) = world.hints()
    world.store.destroy(good)  # a crash between issuing and filing the hint
    world.reconciler.tick()
    assert world.hints() == []
    world.reconciler.start_sweep()
    world.reconciler.sweep_step()
    assert world.hints() == [good]
    assert world.issuer.issued == ["dev.svc.c1"]


def test_a_stale_hint_is_rechecked_and_replaced_not_acted_on(world):
    world.declare_in_vault(spec(1))
    world.reconciler.run_once()
    (good,) = world.hints()
    world.due.put(ref(1), T0)  # left over from before the issuance
    assert len(world.hints()) == 2
    world.reconciler.tick()
    assert world.hints() == [good]
    assert world.issuer.issued == ["dev.svc.c1"]


def test_the_first_retry_waits_the_configured_base_not_the_default():
    w = World(backoff_policy=backoff.BackoffPolicy(base=dt.timedelta(seconds=7)))
    try:
        w.declare_in_vault(spec("bad", issuer="missing"))
        w.reconciler.run_once()
        assert w.status("bad").next_attempt_at == T0 + dt.timedelta(seconds=7)
        w.clock.advance(dt.timedelta(seconds=7))
        w.reconciler.tick()
        assert w.status("bad").attempts == 2  # retried from the due index at the base
    finally:
        w.close()


def test_a_failing_certificate_backs_off_alerts_once_and_does_not_stop_others():
    policy = alerts.AlertPolicy(max_attempts=2)
    w = World(policy=policy)
    try:
        w.declare_in_vault(spec("bad", issuer="missing"))  # no such issuer: always fails
        w.declare_in_vault(spec(1))
        w.reconciler.run_once()
        assert w.issuer.issued == ["dev.svc.c1"]
        bad = w.status("bad")
        assert bad.state == State.FAILED and bad.attempts == 1
        assert bad.next_attempt_at is not None and bad.next_attempt_at > T0
        w.reconciler.tick()
        assert w.status("bad").attempts == 1  # in backoff: not retried
        for _ in range(4):
            w.clock.advance(dt.timedelta(days=1))
            w.reconciler.tick()
        assert w.status("bad").attempts == 5
        assert [(a.certificate, a.kind) for a in w.alerts.sent] == [
            ("dev.svc.cbad", alerts.RETRIES_EXHAUSTED)]
        assert w.status("bad").alerted == alerts.RETRIES_EXHAUSTED
    finally:
        w.close()


def test_a_refusal_that_is_not_retryable_is_not_retried_and_says_so():
    """A CAA refusal (``IssuanceFailed(retryable=False)``) is tried once: the status says
    it is not retried, the alert tells of the refusal (not of exhausted retries), and
    weeks of reconciling make no second attempt. An operator's renew tries again."""
    w = World(policy=alerts.AlertPolicy(max_attempts=2))
    try:
        w.issuer.fail_with = IssuanceFailed("www.c1.test: CAA issue records permit none",
                                            acme_code="caa", retryable=False)
        w.declare_in_vault(spec(1))
        w.reconciler.run_once()
        refused = w.status(1)
        assert (refused.state, refused.attempts, refused.retryable) == (State.FAILED, 1, False)
        assert refused.next_attempt_at is None and "CAA" in (refused.last_error or "")
        assert planning.decide(spec(1), refused, T0).reason == reissue.REFUSED
        for _ in range(30):
            w.clock.advance(dt.timedelta(days=1))
            w.reconciler.run_once()
        assert w.status(1).attempts == 1
        assert [(a.certificate, a.kind) for a in w.alerts.sent] == [
            ("dev.svc.c1", alerts.ISSUANCE_REFUSED)]
        assert w.hints() == []

        w.issuer.fail_with = None  # the CAA record was fixed
        renewed = w.service.renew(w.store, ref(1)).result(timeout=10)
        assert renewed.state == State.VALID and renewed.retryable
    finally:
        w.close()


def test_an_undelivered_alert_is_retried_on_the_next_pass():
    w = World(policy=alerts.AlertPolicy(max_attempts=1))
    try:
        w.declare_in_vault(spec("bad", issuer="missing"))
        w.alerts.fail = True
        w.reconciler.run_once()
        assert w.status("bad").alerted is None
        w.alerts.fail = False
        w.reconciler.run_once()
        w.reconciler.run_once()
        assert len(w.alerts.sent) == 1
    finally:
        w.close()


def test_two_replicas_issue_each_certificate_once():
    store, issuer, clock = MemoryStore(), MemoryIssuer(not_before=T0), FixedClock(T0)
    a = World(store=store, issuer=issuer, clock=clock)
    b = World(store=store, issuer=issuer, clock=clock)
    try:
        for i in range(60):
            a.declare_in_vault(spec(i))
        threads = [threading.Thread(target=w.reconciler.run_once) for w in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in (a, b):  # what a lost lease race left over, the next pass finishes
            w.reconciler.run_once()
        assert sorted(issuer.issued) == sorted(f"dev.svc.c{i}" for i in range(60))
    finally:
        a.close()
        b.close()


class DownStore(MemoryStore):
    down = False

    def list(self, logical_dir: str) -> list[str]:
        if self.down:
            raise VaultUnavailable("sealed")
        return super().list(logical_dir)


def test_vault_unavailable_aborts_the_tick_without_writing():
    store = DownStore()
    w = World(store=store)
    try:
        w.declare_in_vault(spec(1))
        store.down = True
        store.calls.clear()
        with pytest.raises(VaultUnavailable):
            w.reconciler.tick()
        assert store.calls["write"] == 0 and w.issuer.issued == []
    finally:
        w.close()


def test_the_loop_survives_vault_outages_and_stops_on_request():
    store = DownStore()
    w = World(store=store)
    w.reconciler.options = Options(interval=0.01, jitter=0.0, vault_backoff_max=0.02)
    try:
        w.declare_in_vault(spec(1))
        store.down = True
        runner = threading.Thread(target=w.reconciler.run)
        runner.start()
        store.down = False
        import time
        deadline = time.monotonic() + 30
        while not w.issuer.issued and time.monotonic() < deadline:
            time.sleep(0.01)
        w.reconciler.stop()
        runner.join(timeout=30)
        assert not runner.is_alive()
        assert w.issuer.issued == ["dev.svc.c1"]
    finally:
        w.close()


def test_hint_records_are_hints_only(world):
    """A hint for a certificate whose spec is gone is dropped."""
    world.due.put(ref("gone"), T0)
    world.reconciler.tick()
    assert world.hints() == []


def test_due_lists_old_days_first_and_skips_the_future():
    store = MemoryStore()
    due = DueIndex(store, clock=FixedClock(T0))
    due.put(ref(1), T0 - dt.timedelta(days=3))
    due.put(ref(2), T0)
    due.put(ref(3), T0 + dt.timedelta(minutes=1))
    assert [h.ref for h in due.due(T0, 10)] == [ref(1), ref(2)]
    assert due.due(T0, 1) == [Hint(ref(1), *slot_of(T0 - dt.timedelta(days=3)))]


class CountingVerifier:
    """Marks every node of the spec's targets checked now, as the real Verifier does."""

    def __init__(self, world: "World") -> None:
        self.world = world
        self.calls: list[str] = []

    def verify_certificate(self, r: CertificateRef, actor: str | None = None) -> None:
        from certlocker.models import TargetStatus

        self.calls.append(r.id)
        found = self.world.store.read_spec(r)
        assert found is not None
        now = self.world.clock.now()
        self.world.service.update_status(r, lambda old: old.replace(targets=tuple(
            TargetStatus(t.address, "ok", old.current.sha256_fingerprint, now)
            for t in found[0].targets)))


def test_a_certificate_with_targets_is_verified_and_rescheduled_for_the_next_check():
    from certlocker.models import Target

    world = World()
    verifier = CountingVerifier(world)
    world.reconciler = Reconciler(world.store, world.service, world.due, clock=world.clock,
                                  pool=threads(2, "reconcile"),
                                  options=Options(workers=2), verifier=verifier,
                                  verify_interval=dt.timedelta(minutes=15))
    try:
        world.declare_in_vault(spec(1, targets=(Target("127.0.0.1:443"),)))
        world.declare_in_vault(spec(2))  # no targets: never verified
        world.reconciler.run_once()
        assert verifier.calls == ["dev.svc.c1"]
        # Nothing is due before the interval (less one tick: 60 s +10 %) has passed...
        world.clock.advance(dt.timedelta(minutes=13))
        world.reconciler.tick()
        assert verifier.calls == ["dev.svc.c1"]
        # ...and the due index brings it back once it has, without a sweep.
        world.clock.advance(dt.timedelta(minutes=1))
        world.reconciler.tick()
        assert verifier.calls == ["dev.svc.c1", "dev.svc.c1"]
    finally:
        world.close()


def test_the_sweep_carries_on_a_revocation_whose_worker_died():
    from certlocker.models import Revocation

    class FollowUps:
        def __init__(self) -> None:
            self.refs: list[str] = []

        def follow_up(self, r: CertificateRef) -> CertificateStatus:
            self.refs.append(r.id)
            world.service.update_status(r, lambda old: old.replace(revocation=dataclasses
                                        .replace(old.revocation, phase="done")))
            found = world.store.read_status(r)
            assert found is not None
            return found[0]

    import dataclasses

    world = World()
    follow_ups = FollowUps()
    world.reconciler = Reconciler(world.store, world.service, world.due, clock=world.clock,
                                  pool=threads(2, "reconcile"),
                                  options=Options(workers=2), revocations=follow_ups)
    try:
        world.declare_in_vault(spec(1))
        world.declare_in_vault(spec(2))
        world.reconciler.run_once()  # both issued
        for i, phase in ((1, "replacing"), (2, "done")):
            world.service.update_status(ref(i), lambda old, phase=phase: old.replace(
                revocation=Revocation(serial="1", sha256_fingerprint="ab",
                                      reason="keyCompromise", revoked_at=T0, replace=True,
                                      phase=phase)))
        world.reconciler.run_once()
        assert follow_ups.refs == ["dev.svc.c1"]  # only the unfinished one
        world.reconciler.run_once()
        assert follow_ups.refs == ["dev.svc.c1"]  # and only until it is done
    finally:
        world.close()


# -- a declaration's own issuance and the reconciler -------------------------------------

def test_a_declared_issuance_removes_the_declarations_hint_once_done(world):
    future = world.service.declare(world.store, spec(1))
    (declared,) = world.hints()  # due at once: the reconciler's takeover if this dies
    status = future.result(timeout=10)
    assert status.state is State.VALID
    (renewal,) = world.hints()  # the renewal's only: the next tick has nothing to do
    assert renewal != declared
    world.store.calls.clear()
    assert world.reconciler.tick().outcomes == {}
    assert world.store.calls["read_spec"] == 0


def test_a_declared_issuance_keeps_its_retry_filed_in_the_same_minute():
    """A retry base under a minute puts the first retry in the declaration's own minute
    slot: the same hint. Removing the declaration's hint must not remove the retry."""
    from certlocker.errors import IssuanceFailed

    w = World(backoff_policy=backoff.BackoffPolicy(base=dt.timedelta(seconds=5)))
    try:
        w.issuer.fail_with = IssuanceFailed("the CA is down", retryable=True)
        status = w.service.declare(w.store, spec(1)).result(timeout=10)
        assert status.last_error and status.next_attempt_at == T0 + dt.timedelta(seconds=5)
        assert w.hints() == [w.due.hint_for(ref(1), T0).path(w.store)]  # the retry's
        w.issuer.fail_with = None
        w.clock.advance(dt.timedelta(seconds=5))
        w.reconciler.tick()
        assert w.issuer.issued == ["dev.svc.c1"]  # retried on time, without a sweep
        assert w.status(1).state is State.VALID
    finally:
        w.close()


def test_an_issuance_through_the_api_files_the_first_verification():
    """A certificate issued by an API worker (not the reconciler) is verified on the
    reconciler's next tick, not at the next hourly sweep; after a renewal too."""
    from certlocker.models import Target

    interval = dt.timedelta(minutes=15)
    w = World()
    w.due.verify_interval = interval
    verifier = CountingVerifier(w)
    w.reconciler = Reconciler(w.store, w.service, w.due, clock=w.clock,
                              pool=threads(2, "reconcile"),
                              options=Options(workers=2), verifier=verifier,
                              verify_interval=interval)
    try:
        assert w.service.declare(w.store, spec(1, targets=(Target("127.0.0.1:443"),))
                                 ).result(timeout=10).state is State.VALID
        w.reconciler.tick()
        assert verifier.calls == ["dev.svc.c1"]
        w.clock.advance(dt.timedelta(minutes=3))
        w.reconciler.tick()
        assert verifier.calls == ["dev.svc.c1"]  # checked 3 min ago, against this one
        w.issuer.not_before = w.clock.now()
        renewed = w.service.renew(w.store, ref(1)).result(timeout=10)
        assert renewed.current.sha256_fingerprint != w.status(1).history[0]
        w.reconciler.tick()
        assert verifier.calls == ["dev.svc.c1"] * 2  # the renewal made it due at once
    finally:
        w.close()


def test_a_declared_issuance_the_reconciler_took_over_is_not_issued_again(world):
    world.declare_in_vault(spec(1))
    hint = world.due.put(ref(1), T0)
    world.reconciler.tick()  # took it over while the declaration's issuance was queued
    assert world.issuer.issued == ["dev.svc.c1"]
    queued = world.service.schedule(ref(1), declared=True, first_lease=True, hint=hint)
    assert queued.result(timeout=10).state is State.VALID
    assert world.issuer.issued == ["dev.svc.c1"]


def test_a_finished_sweep_drops_emptied_old_days_from_the_index_documents(world):
    world.declare_in_vault(spec(1))
    old = world.due.put(ref(1), T0 - dt.timedelta(days=20))  # handled long ago...
    world.due.remove(old)  # ...and gone; its day is still named
    days = world.store.paths.index_days("schedule")
    assert old.day in world.store.read_json(days)[0]["days"]
    world.reconciler.run_once()
    assert old.day not in world.store.read_json(days)[0]["days"]


def test_the_sweep_clears_a_journal_a_dead_process_left_beside_a_valid_certificate(world):
    """Releases that cleared the journal after the status left the key of a certificate
    in service in ``system/inflight/`` when the worker died between the two."""
    world.declare_in_vault(spec(1))
    world.declare_in_vault(spec(2))
    world.reconciler.run_once()
    stale = {"private_key": "(the key of the certificate in service)", "order_url": "x"}
    for i in (1, 2):
        world.store.write_json(world.store.paths.inflight(ref(i)), stale, cas=None)
    holder = {"holder": "api:live", "expires": world.clock.now().timestamp() + 3600}
    world.store.write_json(world.store.paths.lease(ref(2)), holder, cas=None)

    world.reconciler.run_once()

    assert list(world.service.journaled()) == [ref(2)]  # c2's holder is still at work
    assert sorted(world.issuer.issued) == ["dev.svc.c1", "dev.svc.c2"]  # none again
    assert world.status(1).state is State.VALID
