"""Mass replacement: the pure selection, ordering and progress rules
(``lifecycle.policy.replacement``), then the operation over the honest in-memory store
with the real ``CertificateService`` and reconciler (``lifecycle.replacements``)."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
from typing import Any

import pytest

from certlocker.errors import AccessDenied, InvalidInput, UnprocessableSelection
from certlocker.lifecycle.policy import replacement as policy
from certlocker.lifecycle.policy.replacement import Item, ItemState, Selector
from certlocker.lifecycle.renewal_requests import request_renewal
from certlocker.lifecycle.replacements import DONE, RUNNING, ReplacementService
from certlocker.models import (CertificateRef, CertificateSpec, CertificateStatus, State,
                               Target, TargetStatus)
from tests.support.pools import threads
from tests.unit.test_reconciler import T0, World, info, ref, spec

ISSUERS = ("pebble", "internal")
ENVS = ("prod", "dev")


# -- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    pytest.param({}, "selector", id="no criterion at all"),
    pytest.param({"revoke_old": True}, "selector", id="only options, no criterion"),
    pytest.param({"all": False}, "all", id="all must be true when given"),
    pytest.param({"all": True, "issuer": "pebble"}, "all", id="all beside another"),
    pytest.param({"issuer": "nope"}, "issuer", id="an issuer that is not configured"),
    pytest.param({"environment": "qa"}, "environment", id="an unknown environment"),
    pytest.param({"service": "api"}, "service", id="a service without its environment"),
    pytest.param({"serials": []}, "serials", id="an empty serial list"),
    pytest.param({"serials": ["xyz"]}, "serials", id="a serial that is not hex"),
    pytest.param({"serials": "01"}, "serials", id="serials not a list"),
    pytest.param({"names": "a b"}, "names", id="a glob with a space"),
    pytest.param({"all": True, "revoke_old": "yes"}, "revoke_old", id="revoke_old not bool"),
    pytest.param({"all": True, "colour": 1}, "colour", id="an unknown field"),
    pytest.param({"issuer": 7}, "issuer", id="an issuer that is not a string"),
])
def test_a_bad_request_names_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        policy.parse_request(body, ISSUERS, ENVS)
    assert caught.value.field == field


def test_a_good_request_is_parsed_with_normalised_serials_and_defaults() -> None:
    parsed = policy.parse_request({"serials": ["0x0A:BC", "ff"], "environment": "prod",
                                   "revoke_old": True, "reason": "CA incident"},
                                  ISSUERS, ENVS)
    assert parsed.selector.serials == frozenset({"abc", "ff"})
    assert parsed.revoke_old and parsed.reason == "CA incident"
    assert parsed.revocation_reason == "superseded"
    assert policy.parse_request({"all": True}, ISSUERS, ENVS).selector.all


# -- selection ----------------------------------------------------------------------------

def cert(i: int, *, issuer: str = "pebble", env: str = "prod", service: str = "api",
         names: tuple[str, ...] | None = None, serial: str = "0a",
         issuer_dn: str = "CN=Pebble Intermediate-CA 7",
         issuer_sha256: str | None = None, days: int = 90, targets: int = 0,
         acme_order: str | None = None) -> tuple[CertificateSpec, CertificateStatus]:
    s = CertificateSpec(CertificateRef(env, service, f"c{i}"), names or (f"c{i}.example.com",),
                        issuer, targets=tuple(Target(f"127.0.0.{t + 1}:443")
                                              for t in range(targets)),
                        acme_order=acme_order)
    current = info(T0, days=days, dns_names=s.dns_names, issuer_name=issuer,
                   leaf_pem=f"LEAF {i}", issuer_sha256=issuer_sha256)
    current = current.__class__(**{**current.__dict__, "serial": serial, "issuer": issuer_dn})
    return s, CertificateStatus(State.VALID, current=current)


@pytest.mark.parametrize("selector, picked", [
    pytest.param(Selector(all=True), True, id="all picks it"),
    pytest.param(Selector(issuer="pebble"), True, id="its configured issuer"),
    pytest.param(Selector(issuer="internal"), False, id="another issuer"),
    pytest.param(Selector(serials=frozenset({"a"})), True, id="its serial, leading zero off"),
    pytest.param(Selector(serials=frozenset({"b"})), False, id="another serial"),
    pytest.param(Selector(names="*.example.com"), True, id="a glob over its names"),
    pytest.param(Selector(names="*.example.org"), False, id="a glob it does not match"),
    pytest.param(Selector(environment="prod", service="api"), True, id="its folder"),
    pytest.param(Selector(environment="prod", service="web"), False, id="another service"),
    pytest.param(Selector(issuing_intermediate="intermediate-ca"), True,
                 id="a substring of its issuer DN, any case"),
    pytest.param(Selector(issuing_intermediate="Let's Encrypt"), False,
                 id="another issuer DN"),
    pytest.param(Selector(issuing_intermediate="ab" * 32), True,
                 id="the SHA-256 of its intermediate"),
    pytest.param(Selector(issuing_intermediate="cd" * 32), False,
                 id="another intermediate's SHA-256"),
    pytest.param(Selector(issuer="pebble", serials=frozenset({"b"})), False,
                 id="criteria combine with AND"),
])
def test_a_selector_picks_what_it_says(selector: Selector, picked: bool) -> None:
    s, st = cert(1, issuer_sha256="ab" * 32)
    assert policy.matches(selector, s, st) is picked


def test_a_certificate_never_issued_or_retired_is_not_selected() -> None:
    s, st = cert(1)
    assert not policy.matches(Selector(all=True), s, CertificateStatus(State.PENDING))
    assert not policy.matches(Selector(all=True), s, None)
    assert not policy.matches(Selector(all=True), s, st.replace(state=State.RETIRED))


def test_the_most_urgent_go_first_nearest_deadline_then_most_targets() -> None:
    def item(name: str, days: int, nodes: int) -> Item:
        return Item(name, "1", "ab", T0 + dt.timedelta(days=days),
                    nodes=tuple(f"n{i}" for i in range(nodes)))

    items = [item("late", 80, 9), item("soon-few", 10, 1), item("soon-many", 10, 5),
             item("sooner", 3, 0)]
    assert [i.id for i in policy.urgency_order(items)] == [
        "sooner", "soon-many", "soon-few", "late"]


def test_a_client_held_certificate_is_marked_and_a_leaf_kept_for_revoke_old() -> None:
    s, st = cert(1, acme_order="o1", targets=2)
    item = policy.select_item(s, st, ["127.0.0.1:443", "127.0.0.2:443"], keep_leaf=True)
    assert item.client and item.leaf_pem == "LEAF 1" and len(item.nodes) == 2
    assert policy.select_item(s, st, [], keep_leaf=False).leaf_pem is None
    old = st.replace(current=st.current.__class__(  # type: ignore[union-attr]
        **{**st.current.__dict__, "leaf_pem": None}))  # type: ignore[union-attr]
    cannot = policy.select_item(s, old, [], keep_leaf=True)
    assert policy.classify(cannot, old, True, T0) is ItemState.REVOKE_FAILED


# -- progress -----------------------------------------------------------------------------

OLD = Item("prod.api.c1", "0a", "aa", T0, nodes=("127.0.0.1:443", "127.0.0.2:443"))


def now_serving(serial: str, sha: str, nodes: dict[str, tuple[str, str]] | None = None,
                **kw: Any) -> CertificateStatus:
    current = info(T0)
    current = current.__class__(**{**current.__dict__, "serial": serial,
                                   "sha256_fingerprint": sha})
    targets = tuple(TargetStatus(a, s, served) for a, (s, served) in (nodes or {}).items())
    return CertificateStatus(State.VALID, current=current, targets=targets, **kw)


BOTH_NEW = {"127.0.0.1:443": ("ok", "bb"), "127.0.0.2:443": ("ok", "BB")}
ONE_OLD = {"127.0.0.1:443": ("ok", "bb"), "127.0.0.2:443": ("stale", "aa")}
LATER = T0 + dt.timedelta(minutes=1)


@pytest.mark.parametrize("item, status, declared, state", [
    pytest.param(OLD, now_serving("0a", "aa"), True, ItemState.PENDING,
                 id="still the old serial: pending"),
    pytest.param(OLD.replace(client=True), now_serving("0a", "aa"), True,
                 ItemState.AWAITING_CLIENT, id="a client's key: awaiting the client"),
    pytest.param(OLD, now_serving("0a", "aa", last_error="CA down", updated_at=LATER), True,
                 ItemState.FAILING, id="an attempt after the start failed"),
    pytest.param(OLD, now_serving("0a", "aa", last_error="old", updated_at=T0
                                  - dt.timedelta(days=1)), True, ItemState.PENDING,
                 id="an error from before the operation is not its failure"),
    pytest.param(OLD, now_serving("0b", "bb"), True, ItemState.ISSUED,
                 id="a new serial, nodes not yet seen serving it: issued"),
    pytest.param(OLD, now_serving("0b", "bb", ONE_OLD), True, ItemState.ISSUED,
                 id="one node still serves the old one: issued, not verified"),
    pytest.param(OLD, now_serving("0b", "bb", BOTH_NEW), True, ItemState.VERIFIED,
                 id="every node ok with the new one: verified"),
    pytest.param(OLD.replace(nodes=()), now_serving("0b", "bb"), True, ItemState.VERIFIED,
                 id="no targets: verified once issued"),
    pytest.param(OLD, None, False, ItemState.GONE, id="spec and status gone"),
    pytest.param(OLD, now_serving("0a", "aa").replace(state=State.RETIRED), True,
                 ItemState.GONE, id="retired meanwhile"),
    pytest.param(OLD.replace(revoked_at=LATER), now_serving("0b", "bb", BOTH_NEW), True,
                 ItemState.REVOKED, id="the old one revoked"),
])
def test_each_certificate_state_comes_from_facts(item: Item, status: CertificateStatus | None,
                                                 declared: bool, state: ItemState) -> None:
    assert policy.classify(item, status, declared, T0) is state


def test_progress_counts_finished_and_a_rate_based_eta() -> None:
    states = [ItemState.VERIFIED, ItemState.VERIFIED, ItemState.ISSUED, ItemState.PENDING]
    p = policy.progress(states, False, T0, T0 + dt.timedelta(seconds=60))
    assert p.finished == 2 and p.total == 4 and not p.done
    assert p.counts["verified"] == 2 and p.counts["pending"] == 1
    assert p.eta_seconds == pytest.approx(60.0)  # 2 left at 2 per minute
    with_revoke = policy.progress(states, True, T0, T0 + dt.timedelta(seconds=60))
    assert with_revoke.finished == 0 and with_revoke.eta_seconds is None
    done = policy.progress([ItemState.REVOKED, ItemState.GONE], True, T0, T0)
    assert done.done and done.eta_seconds == 0


def test_an_old_certificate_is_revocable_only_when_served_nowhere_and_unclaimed() -> None:
    leafy = OLD.replace(leaf_pem="PEM")
    timeout = dt.timedelta(minutes=5)
    assert policy.revocable(leafy, ItemState.VERIFIED, T0, timeout)
    assert not policy.revocable(leafy, ItemState.ISSUED, T0, timeout)
    claimed = leafy.replace(revoking_since=T0)
    assert not policy.revocable(claimed, ItemState.VERIFIED, T0 + dt.timedelta(minutes=1),
                                timeout)
    assert policy.revocable(claimed, ItemState.VERIFIED, T0 + dt.timedelta(minutes=6),
                            timeout)


def test_an_item_survives_its_record() -> None:
    item = OLD.replace(client=True, leaf_pem="PEM", revoke_error="x", revoke_attempts=2,
                       revoking_since=T0, issuer_name="pebble", replaced_by="0b")
    assert Item.from_json(item.to_json()) == item


# -- the operation over the in-memory store -------------------------------------------------

class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str, dict[str, Any] | None]] = []

    def record(self, actor: str, action: str, subject: str, outcome: str,
               reason: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.events.append((actor, action, subject, outcome, details))

    def actions(self, action: str) -> list[tuple[str, str, str, str, Any]]:
        return [e for e in self.events if e[1] == action]


class Revoking:
    """An issuer that records what it is asked to revoke."""

    def __init__(self) -> None:
        self.revoked: list[tuple[str, int]] = []

    def revoke(self, certificate_pem: str, reason: int) -> None:
        self.revoked.append((certificate_pem, reason))


class Caller:
    """The caller's store: the world's, with a policy that may refuse some specs."""

    def __init__(self, store: Any, refused: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self._store = store
        self.refused = refused
        self.paths = store.paths

    def capabilities_of(self, paths: list[str]) -> dict[str, set[str]]:
        return {p: set() if any(r in p for r in self.refused) else {"read", "update"}
                for p in paths}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def queued_nowhere(world: World, audit: Audit) -> Any:
    """``request_renewal`` as the API files it, with a queue that dies with the process:
    only what is in the store makes the issuance happen."""
    return lambda r, who, serial: request_renewal(world.store, r, who, clock=world.clock,
                                                  due=world.due, audit=audit,
                                                  schedule=lambda _: cf.Future(),
                                                  unless_replaced=serial)


def service(world: World, audit: Audit, revoker: Revoking | None = None,
            renew: Any = None) -> ReplacementService:
    return ReplacementService(
        world.store, views=world.service.views,
        refs=lambda caller, env, svc: world.service.refs(caller, env, svc),
        renew=renew or queued_nowhere(world, audit),
        issuers=lambda: {"test": revoker} if revoker else {},
        pool=threads(4, "replacements"), clock=world.clock, audit=audit, actor="reconciler")


@pytest.fixture
def issued():
    w = World()
    for i in range(3):
        w.declare_in_vault(spec(i))
    w.reconciler.run_once()
    w.clock.advance(dt.timedelta(minutes=5))
    yield w
    w.close()


def test_an_operation_is_recorded_requests_each_renewal_and_finishes_revoking_old(issued):
    world, audit, revoker = issued, Audit(), Revoking()
    old = {i: world.status(i).current for i in range(3)}
    seen_record: list[bool] = []
    svc = service(world, audit, revoker)

    def renew(r: CertificateRef, who: str, serial: str) -> Any:
        # The operation's record is in the store before any request is filed.
        seen_record.append(any(p.startswith("system/replacements/") and "-items" not in p
                               for p in world.store._data))
        return filing(r, who, serial)

    filing = queued_nowhere(world, audit)
    svc._renew = renew
    request = policy.parse_request({"issuer": "test", "revoke_old": True,
                                    "reason": "drill"}, ("test",), ("dev",))
    op = svc.start(Caller(world.store), request, "alice")
    assert op.selected == 3 and op.requested and all(seen_record)
    for i in range(3):
        by = world.status(i).renewal_request.by  # type: ignore[union-attr]
        assert by == f"alice (replacement {op.id})"
    assert audit.actions("replacement.start")[0][4]["count"] == 3
    assert {e[0] for e in audit.actions("certificate.renew.requested")} == {
        f"alice (replacement {op.id})"}
    assert svc.snapshot(op.id).progress.counts["pending"] == 3

    world.reconciler.tick()  # the renewal-requested trigger issues each one
    snap = svc.advance(op.id)
    assert snap is not None
    assert all(world.status(i).current.serial != old[i].serial for i in range(3))  # type: ignore[union-attr]
    assert sorted(pem for pem, _ in revoker.revoked) == sorted(
        old[i].leaf_pem for i in range(3))  # type: ignore[misc]
    assert {reason for _, reason in revoker.revoked} == {4}  # superseded
    final = svc.snapshot(op.id)
    assert final.operation.state == DONE and final.progress.counts["revoked"] == 3
    assert len(audit.actions("replacement.done")) == 1
    assert svc.advance(op.id) is None  # done stays done, nothing revoked twice
    assert len(revoker.revoked) == 3


def test_requests_a_crash_left_unfiled_are_filed_by_the_next_advance(issued):
    world, audit = issued, Audit()
    old = {i: world.status(i).current.serial for i in range(3)}  # type: ignore[union-attr]

    class Died(Exception):
        pass

    def dies(r: CertificateRef, who: str, serial: str) -> Any:
        raise Died()

    api = service(world, audit, renew=dies)
    request = policy.parse_request({"all": True}, ("test",), ("dev",))
    with pytest.raises(Died):
        api.start(Caller(world.store), request, "alice")
    [op_id] = api.ids()
    assert api.operation(op_id).state == RUNNING and not api.operation(op_id).requested
    assert all(world.status(i).renewal_request is None for i in range(3))

    reconciler_side = service(world, audit)
    assert reconciler_side.running_ids() == [op_id]
    assert reconciler_side.advance_all() == 1
    assert all(world.status(i).renewal_request is not None for i in range(3))
    world.reconciler.tick()
    reconciler_side.advance_all()
    assert all(world.status(i).current.serial != old[i] for i in range(3))  # type: ignore[union-attr]
    assert reconciler_side.operation(op_id).state == DONE
    assert reconciler_side.running_ids() == []  # a finished one costs the ticks nothing
    assert reconciler_side.ids() == [op_id]  # and stays on record


def test_a_running_marker_without_its_record_is_dropped_only_once_stale(issued):
    world = issued
    svc = service(world, Audit())
    orphan = "ab" * 16
    world.store.write_json(world.store.paths.replacement_running(orphan),
                           {"id": orphan, "at": "2030-01-01T12:05:00Z"}, cas=None)
    svc.advance_all()
    assert svc.running_ids() == [orphan]  # may be a start under way
    world.clock.advance(dt.timedelta(minutes=10))
    svc.advance_all()
    assert svc.running_ids() == []


def test_nothing_starts_unless_the_caller_may_renew_every_selected_one(issued):
    world, audit = issued, Audit()
    svc = service(world, audit)
    request = policy.parse_request({"all": True}, ("test",), ("dev",))
    with pytest.raises(AccessDenied):
        svc.start(Caller(world.store, refused={"/c1"}), request, "mallory")
    assert svc.ids() == []
    assert all(world.status(i).renewal_request is None for i in range(3))
    assert audit.actions("replacement.start")[0][3] == "denied"


def test_a_selector_that_matches_nothing_is_refused(issued):
    svc = service(issued, Audit())
    request = policy.parse_request({"names": "*.nowhere"}, ("test",), ("dev",))
    with pytest.raises(UnprocessableSelection):
        svc.start(Caller(issued.store), request, "alice")
    assert svc.ids() == []


def test_urgency_decides_the_order_of_requests(issued):
    world = issued
    filed: list[str] = []
    svc = service(world, Audit(), renew=lambda r, who, serial: filed.append(r.id))
    svc._pool = threads(1, "one")  # one at a time: the order is observable
    # c2 expires first: make it so by hand
    found = world.store.read_status(ref(2))
    assert found is not None
    st, version = found
    sooner = st.current.__class__(**{**st.current.__dict__,  # type: ignore[union-attr]
                                     "not_after": T0 + dt.timedelta(days=1)})
    world.store.write_status(ref(2), st.replace(current=sooner), cas=version)
    svc.start(Caller(world.store), policy.parse_request({"all": True}, ("test",), ("dev",)),
              "alice")
    assert filed[0] == "dev.svc.c2"


def test_the_gauge_counts_certificates_of_running_operations_by_state(issued):
    from certlocker.metrics.replacements import NAME, ReplacementCollector
    from certlocker.metrics.summary import SummaryCache

    world = issued
    svc = service(world, Audit())
    op = svc.start(Caller(world.store), policy.parse_request({"all": True}, ("test",),
                                                             ("dev",)), "alice")
    assert svc.counts()["pending"] == 3
    [family] = list(ReplacementCollector(SummaryCache(svc.counts, 60)).collect())
    assert family.name == NAME
    assert {s.labels["state"]: s.value for s in family.samples}["pending"] == 3
    world.reconciler.tick()
    svc.advance(op.id)
    assert svc.operation(op.id).state == DONE
    assert sum(svc.counts().values()) == 0  # a finished operation is no longer counted


def test_the_issuing_intermediate_is_the_first_certificate_of_the_chain() -> None:
    from certlocker.x509info import first_fingerprint
    from tests.support.nginx_pool import MiniCA

    ca = MiniCA()
    chain = (ca.intermediate.pem + ca.root.pem).decode()
    assert first_fingerprint(chain) == ca.intermediate.sha256
    assert first_fingerprint("") is None
    assert first_fingerprint("-----BEGIN CERTIFICATE-----\nnot base64\n"
                             "-----END CERTIFICATE-----\n") is None


def test_a_request_whose_write_failed_is_filed_again_by_the_next_advance(issued):
    from certlocker.errors import Conflict

    world, audit = issued, Audit()
    filing = queued_nowhere(world, audit)

    def flaky(r: CertificateRef, who: str, serial: str) -> Any:
        if r.name == "c1":
            raise Conflict("the status kept changing under us")
        return filing(r, who, serial)

    api = service(world, audit, renew=flaky)
    op = api.start(Caller(world.store), policy.parse_request({"all": True}, ("test",),
                                                             ("dev",)), "alice")
    assert op.requested and world.status(1).renewal_request is None
    reconciler_side = service(world, audit)
    reconciler_side.advance_all()
    assert world.status(1).renewal_request is not None
    world.reconciler.tick()
    reconciler_side.advance_all()
    assert reconciler_side.operation(op.id).state == DONE


def test_a_finished_operation_is_listed_with_its_final_counts_reading_no_status(issued):
    world, audit = issued, Audit()
    svc = service(world, audit, Revoking())
    op = svc.start(Caller(world.store), policy.parse_request(
        {"all": True, "revoke_old": True}, ("test",), ("dev",)), "alice")
    running = svc.summary(Caller(world.store), op.id)
    assert running is not None and running["counts"]["pending"] == 3
    world.reconciler.tick()
    svc.advance(op.id)
    world.store.paths_read.clear()
    shown = svc.summary(Caller(world.store), op.id)
    assert shown is not None and shown["state"] == "done"
    assert shown["counts"]["revoked"] == 3 and shown["finished"] == 3
    assert not [p for p in world.store.paths_read if p.startswith("status/")]
    assert svc.summary(Caller(world.store, refused={"/c2"}), op.id) is None


def test_a_rate_limited_issuer_sets_the_eta_the_operation_starts_with(issued):
    """Three certificates on an issuer allowing one order per 10 s: the start already
    says the last one waits 20 s for its slot, and the ETA never reads sooner."""
    from certlocker.lifecycle.governed_issuer import GovernedIssuer
    from certlocker.lifecycle.policy.ratelimits import Limit
    from certlocker.lifecycle.records.rate_books import RateBooks
    from tests.support.memory_issuer import MemoryIssuer

    world, audit = issued, Audit()
    one_per_10s = Limit(1, dt.timedelta(seconds=10))
    limited = GovernedIssuer("test", [MemoryIssuer("test")],
                             RateBooks(world.store, "test", accounts=1, orders=one_per_10s),
                             clock=world.clock)
    svc = service(world, audit)
    svc._issuers = lambda: {"test": limited}
    request = policy.parse_request({"issuer": "test"}, ("test",), ("dev",))
    op = svc.start(Caller(world.store), request, "alice")
    now = world.clock.now()
    assert op.limits_eta == now + dt.timedelta(seconds=20)
    assert svc.operation(op.id).limits_eta == op.limits_eta  # stored with the record
    shown = svc.snapshot(op.id).to_json(with_items=False)
    assert shown["eta_seconds"] >= 20 and shown["limits_eta"] is not None
    unlimited = service(world, audit)
    unlimited._issuers = lambda: {"test": MemoryIssuer("test")}
    assert unlimited.start(Caller(world.store), request, "alice").limits_eta is None


def test_the_eta_counts_the_fleets_delivery_time_when_nodes_wait_for_it():
    from certlocker.lifecycle.governed_issuer import GovernedIssuer
    from certlocker.lifecycle.policy.ratelimits import Limit
    from certlocker.lifecycle.records.rate_books import RateBooks
    from tests.support.memory_issuer import MemoryIssuer

    world = World()
    try:
        for i in range(3):
            world.declare_in_vault(spec(i, targets=(Target(f"127.0.0.{i + 1}:443"),)))
        world.reconciler.run_once()
        one_per_10s = Limit(1, dt.timedelta(seconds=10))
        limited = GovernedIssuer("test", [MemoryIssuer("test")],
                                 RateBooks(world.store, "test", orders=one_per_10s),
                                 clock=world.clock)
        request = policy.parse_request({"issuer": "test"}, ("test",), ("dev",))
        svc = ReplacementService(
            world.store, views=world.service.views,
            refs=lambda caller, env, s: world.service.refs(caller, env, s),
            renew=queued_nowhere(world, Audit()), issuers=lambda: {"test": limited},
            pool=threads(4, "replacements"), clock=world.clock,
            delivery=dt.timedelta(seconds=60))
        op = svc.start(Caller(world.store), request, "alice")
        # one order per 10 s: the third at 20 s, then the fleet's 60 s to pick it up
        assert op.limits_eta == world.clock.now() + dt.timedelta(seconds=80)
    finally:
        world.close()


class Held(cf.Executor):
    """A follower pool that runs nothing until told: what happens before and after the
    start's answer can be looked at apart."""

    def __init__(self) -> None:
        self.work: list[tuple[Any, tuple[Any, ...]]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        self.work.append((fn, args))
        return cf.Future()


def test_with_a_follower_the_start_answers_once_recorded_and_files_behind(issued):
    world, audit = issued, Audit()
    follower = Held()
    svc = ReplacementService(
        world.store, views=world.service.views,
        refs=lambda caller, env, svc: world.service.refs(caller, env, svc),
        renew=queued_nowhere(world, audit), issuers=lambda: {},
        pool=threads(4, "replacements"), clock=world.clock, audit=audit,
        follow=follower, follow_for=0.0)
    op = svc.start(Caller(world.store), policy.parse_request({"all": True}, ("test",),
                                                             ("dev",)), "alice")
    assert svc.operation(op.id).state == RUNNING and not op.requested
    assert all(world.status(i).renewal_request is None for i in range(3))
    assert svc.running_ids() == [op.id]  # the reconciler would file them if we died now

    [(work, args)] = follower.work
    work(*args)  # the follower: every request, then (follow_for=0) no following
    assert all(world.status(i).renewal_request is not None for i in range(3))
    assert svc.operation(op.id).requested


def test_a_certificate_replaced_since_its_selection_gets_no_request(issued):
    world, audit = issued, Audit()
    item = policy.select_item(world.store.read_spec(ref(0))[0],  # type: ignore[index]
                              world.status(0), [], keep_leaf=False)
    queued = world.service.request_renewal(ref(0), "bob")
    assert queued is not None
    queued.result(10)  # replaced by someone else meanwhile
    assert world.status(0).current.serial != item.serial  # type: ignore[union-attr]
    assert world.status(0).renewal_request is None
    filing = queued_nowhere(world, audit)
    assert filing(ref(0), "alice (replacement x)", item.serial) is None
    assert world.status(0).renewal_request is None
    assert audit.actions("certificate.renew.requested") == []


def counted(store: Any, method: str) -> list[str]:
    """The ids ``store.<method>`` is called with from now on."""
    calls: list[str] = []
    original = getattr(store, method)

    def counting(r: CertificateRef) -> Any:
        calls.append(r.id)
        return original(r)

    setattr(store, method, counting)
    return calls


def test_statuses_seen_verified_are_not_read_again_while_it_runs(issued):
    world = issued
    svc = service(world, Audit())
    op = svc.start(Caller(world.store), policy.parse_request({"all": True}, ("test",),
                                                             ("dev",)), "alice")
    world.reconciler.tick()  # no targets: each is verified once issued
    reads = counted(world.store, "read_status")
    first = svc.snapshot(op.id)
    assert first.progress.counts["verified"] == 3 and len(reads) == 3
    again = svc.snapshot(op.id)
    assert again.progress.counts["verified"] == 3 and len(reads) == 3
    assert [s for _, _, s in again.items] == [s for _, _, s in first.items]


def test_a_pending_certificates_spec_is_not_read_again_at_every_look(issued):
    world = issued
    svc = service(world, Audit())
    op = svc.start(Caller(world.store), policy.parse_request({"all": True}, ("test",),
                                                             ("dev",)), "alice")
    specs_read = counted(world.store, "read_spec")
    assert svc.snapshot(op.id).progress.counts["pending"] == 3 and len(specs_read) == 3
    assert svc.snapshot(op.id).progress.counts["pending"] == 3 and len(specs_read) == 3
