"""Rate limits: the sliding-window arithmetic, the ETA, the fallback decision (pure), and
the reservation books and governed issuer over the in-memory store."""

from __future__ import annotations

import contextlib

import datetime as dt
import random

import pytest

from certlocker import names, settings as settings_module
from certlocker.clock import FixedClock
from certlocker.errors import (ConfigurationError, Conflict, IssuanceDeferred, IssuanceFailed,
                               RateLimited)
from certlocker.lifecycle.governed_issuer import GovernedIssuer, Governance, eta
from certlocker.lifecycle.policy import planning, ratelimits
from certlocker.lifecycle.policy.backoff import next_attempt
from certlocker.lifecycle.policy.ratelimits import Limit
from certlocker.lifecycle.records.rate_books import RateBooks
from certlocker.models import (CertificateRef, CertificateSpec, CertificateStatus, IssueRequest,
                               KeyType, State)
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
S = dt.timedelta(seconds=1)
THREE_PER_10S = Limit(3, 10 * S)


def at(*seconds: float) -> list[dt.datetime]:
    return [T0 + s * S for s in seconds]


def most_in_any_window(times: list[dt.datetime], window: dt.timedelta) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


# -- the arithmetic ---------------------------------------------------------------------------
@pytest.mark.parametrize("taken, after, expected", [
    ([], 0, 0),                       # nothing taken: now
    ([0, 1], 2, 2),                   # room left in the window: now
    ([0, 1, 2], 3, 10),               # full: when the first order leaves the window
    ([0, 1, 2], 11, 11),              # the window has moved on: now
    ([0, 5, 9], 9.5, 10),             # sliding, not fixed: 10 is free, 9.5 is not
    ([20, 21, 22], 0, 0),             # scheduled later: a slot before them still fits...
    ([14, 15, 16], 8, 24),            # ...but not one that makes four within 10 s
], ids=["empty", "room", "full", "moved on", "sliding", "before scheduled",
        "between scheduled"])
def test_the_earliest_slot_keeps_every_window_inside_the_limit(
        taken: list[float], after: float, expected: float) -> None:
    got = ratelimits.earliest(at(*taken), THREE_PER_10S, T0 + after * S)
    assert got == T0 + expected * S
    assert most_in_any_window(at(*taken) + [got], 10 * S) <= 3


def test_no_sequence_of_reservations_ever_exceeds_the_limit() -> None:
    rng = random.Random(7)
    taken: list[dt.datetime] = []
    for _ in range(200):
        now = T0 + rng.uniform(0, 120) * S
        slot = ratelimits.earliest(sorted(taken), THREE_PER_10S, now)
        assert slot >= now
        taken.append(slot)
    assert most_in_any_window(taken, 10 * S) == 3


def test_several_limits_are_kept_at_once() -> None:
    per_domain = Limit(2, 60 * S)
    slot = ratelimits.earliest_all([(at(0, 1), THREE_PER_10S), (at(0, 30), per_domain)],
                                   T0 + 2 * S)
    assert slot == T0 + 60 * S  # the account has room at 2 s; the domain only at 60 s


def test_nine_certificates_at_three_per_ten_seconds_finish_in_the_third_window() -> None:
    assert ratelimits.eta([[]], THREE_PER_10S, 9, T0) == T0 + 20 * S
    slots = ratelimits.schedule([[]], THREE_PER_10S, 9, T0)
    assert [s for _, s in slots] == at(0, 0, 0, 10, 10, 10, 20, 20, 20)


def test_accounts_share_the_load_and_shorten_the_eta() -> None:
    slots = ratelimits.schedule([[], [], []], THREE_PER_10S, 9, T0)
    assert {s for _, s in slots} == {T0}  # three accounts, three orders each: all now
    assert sorted(i for i, _ in slots) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ratelimits.eta([[], []], THREE_PER_10S, 9, T0, 2 * S) == T0 + 12 * S


def test_an_eta_counts_what_is_already_reserved_and_adds_one_issuance() -> None:
    assert ratelimits.eta([at(0, 1, 2)], THREE_PER_10S, 1, T0 + 3 * S, 2 * S) == T0 + 12 * S
    assert ratelimits.eta([[]], None, 1000, T0) == T0  # no limit: nothing holds them back
    assert ratelimits.eta([[]], THREE_PER_10S, 0, T0) == T0


# -- the fallback decision ----------------------------------------------------------------
HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize("error, goes", [
    (IssuanceFailed("x", acme_code="connection"), True),
    (IssuanceFailed("x", acme_code="serverInternal"), True),
    (RateLimited("x", retry_after=7200), True),        # longer than the slack
    (RateLimited("x", retry_after=60), False),          # wait for it instead
    (RateLimited("x", retry_after=None), True),         # no idea how long: go
    (IssuanceFailed("x", acme_code="rejectedIdentifier", retryable=False), False),
    (IssuanceFailed("x", acme_code="unauthorized"), False),  # our challenge, not the CA
], ids=["connection", "serverInternal", "retry-after too long", "retry-after fits",
        "no retry-after", "rejected identifier", "challenge failed"])
def test_which_failures_go_to_the_fallback(error: IssuanceFailed, goes: bool) -> None:
    assert (ratelimits.fallback_for_failure(error, HOUR) is not None) is goes


def test_the_slack_is_the_setting_but_at_most_half_the_time_left() -> None:
    assert ratelimits.slack(None, T0, HOUR) == HOUR
    assert ratelimits.slack(T0 + dt.timedelta(days=30), T0, HOUR) == HOUR
    assert ratelimits.slack(T0 + 40 * dt.timedelta(minutes=1), T0, HOUR) == 20 * 60 * S
    assert ratelimits.slack(T0 - S, T0, HOUR) == dt.timedelta(0)
    assert ratelimits.fallback_for_wait(30 * 60 * S, HOUR) is None
    assert "exhausted" in (ratelimits.fallback_for_wait(2 * HOUR, HOUR) or "")


def test_the_registered_domain_follows_the_public_suffix_list() -> None:
    assert names.registered_domain("*.API.Example.com.") == "example.com"
    assert names.registered_domain("example.com") == "example.com"
    # Multi-label suffixes are not one bucket for a whole country's domains.
    assert names.registered_domain("www.shop.example.co.uk") == "example.co.uk"
    assert names.registered_domain("api.example.com.au") == "example.com.au"
    # Private entries count as Let's Encrypt counts them: each user's site on its own.
    assert names.registered_domain("docs.me.github.io") == "me.github.io"
    # Names under a suffix the list does not know (.test) and a suffix itself.
    assert names.registered_domain("a.b.example.test") == "example.test"
    assert names.registered_domain("co.uk") == "co.uk"


def test_a_retry_after_is_a_floor_for_the_next_attempt() -> None:
    when = next_attempt(1, T0, dt.timedelta(days=90), random.Random(1),
                        retry_after=RateLimited("x", retry_after=7200).retry_after)
    assert when >= T0 + 2 * HOUR


# -- a certificate from the fallback is not an issuer change ---------------------------------
def test_a_certificate_from_the_fallback_is_not_reissued_until_its_renewal() -> None:
    issuer = MemoryIssuer("backup")
    ref = CertificateRef("dev", "web", "www")
    spec = CertificateSpec(ref, ("www.example.test",), "primary", KeyType.EC_P256)
    issued = issuer.issue(IssueRequest(ref, spec.dns_names, spec.key_type), None)  # type: ignore[arg-type]
    info = issued.info.__class__(**{**issued.info.__dict__, "issuer_name": "backup",
                                    "key_type": "ec-p256", "fallback_for": "primary",
                                    "fallback_reason": "the primary failed"})
    status = CertificateStatus(State.VALID, current=info)
    now = info.not_before + dt.timedelta(days=1)
    assert not planning.decide(spec, status, now).needed
    later = info.not_after - dt.timedelta(days=10)
    assert planning.decide(spec, status, later).reason == "renewal-due"
    # the operator moves the spec to a third issuer: that is an issuer change
    moved = CertificateSpec(ref, spec.dns_names, "third", KeyType.EC_P256)
    assert planning.decide(moved, status, now).reason == "issuer-changed"
    # round trip through the status record
    assert CertificateStatus.from_json(status.to_json()).current == info


# -- the books and the governed issuer over a store ------------------------------------------
def request(i: int, names: tuple[str, ...] | None = None) -> IssueRequest:
    ref = CertificateRef("dev", "web", f"c{i}")
    return IssueRequest(ref, names or (f"c{i}.example{i}.test",), KeyType.EC_P256)


def governed(store: MemoryStore, clock: FixedClock, *, accounts: int = 1,
             fallback: MemoryIssuer | None = None, max_wait: float = 0,
             fallback_after: float = 3600) -> tuple[GovernedIssuer, list[MemoryIssuer],
                                                  list[float]]:
    inner = [MemoryIssuer("primary") for _ in range(accounts)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(dt.timedelta(seconds=seconds))

    books = RateBooks(store, "primary", accounts=accounts, orders=THREE_PER_10S)
    issuer = GovernedIssuer("primary", inner, books, clock=clock, sleep=sleep,
                            governance=Governance(max_wait=max_wait * S,
                                                  fallback_after=fallback_after * S))
    return (issuer.with_fallback(fallback) if fallback else issuer), inner, slept


def test_past_the_limit_a_certificate_is_deferred_to_its_slot_and_takes_it_later() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, _ = governed(store, clock)
    for i in range(3):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    with pytest.raises(IssuanceDeferred) as deferred:
        issuer.issue(request(3), None)  # type: ignore[arg-type]
    assert deferred.value.until == T0 + 10 * S
    # another certificate gets the next slot, not the one held for c3
    with pytest.raises(IssuanceDeferred) as second:
        issuer.issue(request(4), None)  # type: ignore[arg-type]
    assert second.value.until == T0 + 10 * S  # three per window: c3, c4 (and one more)
    clock.advance(10 * S)
    issuer.issue(request(3), None)  # type: ignore[arg-type]
    assert inner[0].issued == ["dev.web.c0", "dev.web.c1", "dev.web.c2", "dev.web.c3"]
    # held: c4 at 10 s; three more: 10 s, 20 s, 20 s (plus one issuance's time here)
    assert T0 + 20 * S <= eta({"primary": issuer}, "primary", 3, clock.now()) < T0 + 21 * S


def placed(store: MemoryStore) -> list[dt.datetime]:
    """The orders the books record as placed (what a CA would have counted)."""
    books = RateBooks(store, "primary", orders=THREE_PER_10S)
    return books._read(store.paths.rate_book("primary", "orders", "account-0"),  # noqa: SLF001
                       THREE_PER_10S, T0).times(used_only=True)


def test_late_for_its_slot_a_certificate_orders_if_the_orders_placed_leave_room() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, _ = governed(store, clock)
    for i in range(6):
        with contextlib.suppress(IssuanceDeferred):
            issuer.issue(request(i), None)  # type: ignore[arg-type]
    clock.advance(25 * S)  # c3-c5 held 10 s, back at 25 s: nothing placed since 0 s
    for i in (3, 4, 5):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    assert inner[0].issued[3:] == ["dev.web.c3", "dev.web.c4", "dev.web.c5"]
    # recorded when ordered, not as planned (c0-c2 have left the window's book)
    assert placed(store) == [T0 + 25 * S] * 3


def test_late_into_a_full_window_a_certificate_reserves_again() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, _ = governed(store, clock)
    for i in range(9):  # c0-c2 at 0 s; c3-c5 held at 10 s; c6-c8 at 20 s
        with contextlib.suppress(IssuanceDeferred):
            issuer.issue(request(i), None)  # type: ignore[arg-type]
    clock.advance(20 * S)
    for i in (6, 7, 8):  # on time
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    clock.advance(1 * S)
    with pytest.raises(IssuanceDeferred) as deferred:
        issuer.issue(request(3), None)  # type: ignore[arg-type]
    assert deferred.value.until == T0 + 30 * S  # c6-c8 leave the window
    assert "dev.web.c3" not in inner[0].issued


def test_displaced_by_late_orders_a_certificate_goes_next_ahead_of_later_plans() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, _ = governed(store, clock)
    for i in range(12):  # c0-c2 at 0 s; held: c3-c5 at 10 s, c6-c8 at 20 s, c9-c11 at 30 s
        with contextlib.suppress(IssuanceDeferred):
            issuer.issue(request(i), None)  # type: ignore[arg-type]
    clock.advance(11 * S)
    for i in (3, 4, 5):  # a second late: placed at 11 s
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    clock.advance(9 * S)
    for i in (6, 7, 8):  # on time at 20 s, but the window still holds c3-c5
        with pytest.raises(IssuanceDeferred) as deferred:
            issuer.issue(request(i), None)  # type: ignore[arg-type]
        assert deferred.value.until == T0 + 21 * S  # not behind c9-c11
    clock.advance(1 * S)
    for i in (6, 7, 8):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    assert inner[0].issued[6:] == ["dev.web.c6", "dev.web.c7", "dev.web.c8"]
    assert placed(store) == [T0 + 21 * S] * 3  # (c3-c5 at 11 s have left the book)


def test_an_order_is_recorded_at_the_time_its_reservation_won_not_when_it_began() -> None:
    """Another worker wins the first write; the retry two seconds later is what is
    recorded, or the next window's slots would be planned two seconds too early."""

    class Contended(MemoryStore):
        lost = 0

        def write_json(self, logical, document, cas):  # type: ignore[no-untyped-def]
            if "ratelimits" in logical and not self.lost:
                self.lost += 1
                super().write_json(logical, {"entries": []}, cas)  # the other writer
                raise Conflict("changed by another writer")
            return super().write_json(logical, document, cas)

    store = Contended()
    times = iter([T0, T0 + 2 * S])
    books = RateBooks(store, "primary", orders=THREE_PER_10S)
    slot = books.reserve("dev.web.c0", ("c0.example.test",), lambda: next(times), 0 * S)
    assert slot.taken and slot.at == T0 + 2 * S
    assert placed(store) == [T0 + 2 * S]


def test_certificates_all_late_for_their_slots_still_go_at_the_limit() -> None:
    """The reconciler comes back a tick after each slot: every certificate is late. Each
    round still orders as many as the limit allows, and no window holds more."""
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, _ = governed(store, clock)
    waiting = set(range(15))
    times: list[dt.datetime] = []
    rounds = 0
    while waiting and rounds < 10:
        for i in sorted(waiting):
            try:
                issuer.issue(request(i), None)  # type: ignore[arg-type]
                times.append(clock.now())  # no wait in the worker here: ordered now
                waiting.discard(i)
            except IssuanceDeferred:
                pass
        clock.advance(13 * S)  # a tick of 13 s: late for every 10 s slot
        rounds += 1
    assert not waiting and len(inner[0].issued) == 15
    assert rounds == 5  # three a round: the limit, not fewer
    assert all(sum(1 for t in times if start <= t < start + 10 * S) <= 3 for start in times)


def test_a_short_wait_is_waited_for_in_the_worker() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, slept = governed(store, clock, max_wait=30)
    for i in range(7):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    assert slept == [10.0, 10.0]  # c3 waits until 10 s, c6 until 20 s
    assert len(inner[0].issued) == 7


def test_orders_are_spread_over_the_accounts() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    issuer, inner, _ = governed(store, clock, accounts=3)
    for i in range(9):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    assert [len(i.issued) for i in inner] == [3, 3, 3]
    with pytest.raises(IssuanceDeferred):
        issuer.issue(request(9), None)  # type: ignore[arg-type]


def test_an_exhausted_primary_hands_over_to_the_fallback_with_the_reason() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    backup = MemoryIssuer("backup")
    issuer, inner, _ = governed(store, clock, fallback=backup, fallback_after=5)
    for i in range(3):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    issued = issuer.issue(request(3), None)  # type: ignore[arg-type]
    assert backup.issued == ["dev.web.c3"]
    assert issued.info.issuer_name == "backup" and issued.info.fallback_for == "primary"
    assert "exhausted" in (issued.info.fallback_reason or "")


def test_a_failing_primary_hands_over_and_a_request_error_does_not() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    backup = MemoryIssuer("backup")
    issuer, inner, _ = governed(store, clock, fallback=backup)
    inner[0].fail_with = IssuanceFailed("down", acme_code="connection")
    assert issuer.issue(request(0), None).info.fallback_for == "primary"  # type: ignore[arg-type]
    inner[0].fail_with = IssuanceFailed("no", acme_code="rejectedIdentifier", retryable=False)
    with pytest.raises(IssuanceFailed):
        issuer.issue(request(1), None)  # type: ignore[arg-type]
    assert backup.issued == ["dev.web.c0"]


# -- settings -----------------------------------------------------------------------------------
BASE = {"vault_addr": "http://127.0.0.1:8200", "vault_token": "t"}


def test_limits_and_fallback_are_read_and_validated_at_start() -> None:
    loaded = settings_module.load(None, {
        "CERTLOCKER_VAULT_ADDR": "http://127.0.0.1:8200", "CERTLOCKER_VAULT_TOKEN": "t",
        "CERTLOCKER_ISSUERS__PRIMARY__DIRECTORY_URL": "https://127.0.0.1:14000/dir",
        "CERTLOCKER_ISSUERS__PRIMARY__LIMITS__ORDERS_PER_WINDOW": "3",
        "CERTLOCKER_ISSUERS__PRIMARY__LIMITS__ORDER_WINDOW_SECONDS": "10",
        "CERTLOCKER_ISSUERS__PRIMARY__ACCOUNTS": "2",
        "CERTLOCKER_ISSUERS__PRIMARY__FALLBACK": "backup",
        "CERTLOCKER_ISSUERS__BACKUP__DIRECTORY_URL": "https://127.0.0.1:14001/dir",
        "CERTLOCKER_DEFAULT_ISSUER": "primary"})
    primary = loaded.issuer("primary")
    assert primary.limits is not None and primary.limits.orders_per_window == 3
    assert primary.limits.order_window_seconds == 10
    assert primary.accounts == 2 and primary.fallback == "backup"


@pytest.mark.parametrize("issuer, message", [
    ({"limits": {"orders_per_window": 0}}, "orders_per_window"),
    ({"limits": {"orders": 3}}, "unknown settings: issuers.a.limits.orders"),
    ({"limits": {"requests_per_second": "fast"}}, "requests_per_second"),
    ({"limits": {"max_wait_seconds": 200}}, "max_wait_seconds"),
    ({"fallback": "nowhere"}, "'nowhere' is not configured"),
    ({"fallback": "a"}, "another issuer"),
    ({"accounts": 0}, "accounts"),
], ids=["zero", "unknown key", "not a number", "wait beyond the timeout", "no such fallback",
        "itself", "no accounts"])
def test_bad_limits_fail_at_start_naming_the_key(issuer: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        settings_module.from_mapping({**BASE, "issuance_timeout_seconds": 300, "issuers": {
            "a": {"directory_url": "https://127.0.0.1:1/dir", **issuer}}})


def test_without_an_order_limit_the_accounts_take_turns() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    inner = [MemoryIssuer("primary") for _ in range(3)]
    issuer = GovernedIssuer("primary", inner, RateBooks(store, "primary", accounts=3),
                            clock=clock)
    for i in range(6):
        issuer.issue(request(i), None)  # type: ignore[arg-type]
    assert [len(i.issued) for i in inner] == [2, 2, 2]
