"""The audit chain: tamper detection, concurrent writers, refusal of key material."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from certlocker.audit.chain import GENESIS_HASH, AuditEvent, AuditLog, query, verify
from certlocker.audit.memory import MemoryAuditStore
from certlocker.clock import FixedClock
from certlocker.errors import Conflict
from tests.support.threads import run_together

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def _filled(n: int) -> tuple[AuditLog, MemoryAuditStore, FixedClock]:
    store = MemoryAuditStore()
    clock = FixedClock(T0)
    log = AuditLog([store], clock)
    for i in range(1, n + 1):
        log.record(actor="alice" if i % 2 else "reconciler",
                   action="certificate.renew" if i % 3 else "certificate.issue",
                   subject=f"prod.api.c{i % 5}", outcome="success",
                   details={"serial": f"{i:04x}", "targets": ["10.0.0.1:443"]})
        clock.advance(dt.timedelta(minutes=1))
    return log, store, clock


def test_fifty_events_verify_and_link_from_genesis() -> None:
    log, store, _ = _filled(50)
    [lane] = log.verify()
    result = lane.result
    assert result.head == store.head() and result.ok and result.checked == 50
    assert result.first_bad_seq is None
    first = store.read(1)
    assert first is not None and first.prev_hash == GENESIS_HASH
    assert store.read(2).prev_hash == first.hash  # type: ignore[union-attr]
    assert store.head() == (50, store.read(50).hash)  # type: ignore[union-attr]


def test_edit_one_field_of_event_17_is_found_at_17() -> None:
    _, store, _ = _filled(50)
    store.events[17] = dataclasses.replace(store.events[17], outcome="failure")
    result = verify(store)
    assert not result.ok
    assert result.first_bad_seq == 17
    assert result.checked == 16
    assert "edited" in (result.problem or "")


def test_an_event_rewritten_and_restored_is_found_by_its_stored_version() -> None:
    """The content is back, so the hashes agree; the storage's third version of an event
    written once gives it away. The stored form does not carry the version."""
    _, store, _ = _filled(50)
    store.events[17] = dataclasses.replace(store.events[17], stored_version=3)
    result = verify(store)
    assert not result.ok and result.first_bad_seq == 17 and result.checked == 16
    assert "version 3" in (result.problem or "")
    assert "stored_version" not in store.events[17].to_json()


def test_edit_with_rehash_breaks_the_next_link() -> None:
    _, store, _ = _filled(50)
    forged = AuditEvent.create(**{**store.events[17].body(), "actor": "mallory"})
    store.events[17] = forged
    result = verify(store)
    assert not result.ok and result.first_bad_seq == 18
    assert "prev_hash" in (result.problem or "")


def test_deleted_event_30_is_detected() -> None:
    _, store, _ = _filled(50)
    del store.events[30]
    result = verify(store)
    assert not result.ok and result.first_bad_seq == 30


def test_deleted_event_renumbered_is_detected_by_prev_hash() -> None:
    _, store, _ = _filled(50)
    # An attacker removes 30 and shifts the later events down, re-hashing each.
    later = [store.events[s] for s in range(31, 51)]
    for s in range(30, 51):
        del store.events[s]
    prev = store.events[29].hash
    for new_seq, event in enumerate(later, start=30):
        body = {**event.body(), "seq": new_seq}
        store.events[new_seq] = AuditEvent.create(**body)
    store.head_pointer = (49, store.events[49].hash)
    result = verify(store)
    assert prev != store.events[30].prev_hash
    assert not result.ok and result.first_bad_seq == 30


def test_reordered_events_are_detected() -> None:
    _, store, _ = _filled(50)
    store.events[10], store.events[11] = store.events[11], store.events[10]
    result = verify(store)
    assert not result.ok and result.first_bad_seq == 10


def test_truncated_tail_is_caught_only_with_an_anchor() -> None:
    log, store, _ = _filled(50)
    anchor = log.heads()[0]
    for s in range(46, 51):
        del store.events[s]
    store.head_pointer = (45, store.events[45].hash)
    assert verify(store).ok  # a shorter chain is self-consistent
    result = verify(store, anchor=anchor)
    assert not result.ok and "truncated" in (result.problem or "")


def test_anchor_mismatch_is_reported() -> None:
    log, store, _ = _filled(10)
    assert verify(store, anchor=(5, store.events[5].hash)).ok
    result = verify(store, anchor=(5, "f" * 64))
    assert not result.ok and result.first_bad_seq == 5


def test_head_pointer_beyond_events_is_detected() -> None:
    _, store, _ = _filled(10)
    del store.events[10]
    result = verify(store)
    assert not result.ok and result.first_bad_seq == 10


def test_empty_chain_verifies() -> None:
    result = verify(MemoryAuditStore())
    assert result.ok and result.checked == 0


def test_concurrent_record_from_eight_threads_gives_a_gap_free_chain() -> None:
    store = MemoryAuditStore()
    clock = FixedClock(T0)
    log = AuditLog([store], clock)
    per_thread = 40

    def writer(n: int) -> None:
        for i in range(per_thread):
            log.record(f"replica-{n}", "certificate.renew", f"prod.api.c{i}",
                       "success", details={"i": i})

    errors = run_together(8, writer)
    assert errors == []
    assert sorted(store.events) == list(range(1, 8 * per_thread + 1))
    result = verify(store)
    assert result.ok and result.checked == 8 * per_thread
    counts = {f"replica-{n}": 0 for n in range(8)}
    for event in store.events.values():
        counts[event.actor] += 1
    assert set(counts.values()) == {per_thread}


def test_several_processes_writing_one_chain_stay_linked() -> None:
    """Each AuditLog stands for one process (API workers, replicas, the reconciler):
    their cached heads go stale as the others append, and every append still links to
    the event right before it."""
    store = MemoryAuditStore()
    logs = [AuditLog([store], FixedClock(T0)) for _ in range(4)]

    def writer(n: int) -> None:
        for i in range(25):
            logs[n % 4].record(f"p{n % 4}", "credential.mint", f"s{i}", "success")

    errors = run_together(8, writer)
    assert errors == []
    assert sorted(store.events) == list(range(1, 201))
    result = verify(store)
    assert result.ok and result.checked == 200


class _CountingStore(MemoryAuditStore):
    """Counts what an ``AuditLog`` asks of its store: each call is a Vault round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = 0
        self.reads: list[int] = []
        self.refused: list[int] = []

    def head(self):  # type: ignore[no-untyped-def]
        self.heads += 1
        return super().head()

    def read(self, seq: int) -> AuditEvent | None:
        self.reads.append(seq)
        return super().read(seq)

    def append(self, event: AuditEvent, expected_seq: int) -> None:
        try:
            super().append(event, expected_seq)
        except Conflict:
            self.refused.append(event.seq)
            raise


def test_a_lone_writer_reads_the_head_once_then_only_writes() -> None:
    store = _CountingStore()
    log = AuditLog([store], FixedClock(T0))
    for i in range(10):
        log.record("a", "spec.create", f"s{i}", "success")
    assert store.heads == 1
    assert store.reads == []  # one write per event, nothing else
    assert store.refused == []
    assert verify(store).ok and sorted(store.events) == list(range(1, 11))


def test_a_stale_writer_is_refused_once_then_links_to_the_other_writers_events() -> None:
    store = _CountingStore()
    ours, theirs = AuditLog([store], FixedClock(T0)), AuditLog([store], FixedClock(T0))
    ours.record("a", "spec.create", "s0", "success")  # seq 1
    theirs.record("b", "spec.create", "s1", "success")  # seq 2
    theirs.record("b", "spec.create", "s2", "success")  # seq 3
    store.reads.clear()
    event = ours.record("a", "spec.create", "s3", "success")
    assert store.refused == [2]  # wrote seq 2 blindly: taken
    assert store.reads == [2, 3, 4]  # rolled forward over b's events
    assert event.seq == 4 and event.prev_hash == store.events[3].hash
    assert verify(store).ok


def test_after_contention_a_writer_looks_first_until_a_look_finds_nothing_new() -> None:
    store = _CountingStore()
    ours, theirs = AuditLog([store], FixedClock(T0)), AuditLog([store], FixedClock(T0))
    ours.record("a", "x", "s", "success")
    theirs.record("b", "x", "s", "success")
    ours.record("a", "x", "s", "success")  # refused once: now contended
    assert store.refused == [2]
    theirs.record("b", "x", "s", "success")  # b, at seq 2, is refused at 3 once too
    assert store.refused == [2, 3]
    store.reads.clear()
    for _ in range(5):  # strictly alternating: both look first, nobody is refused again
        ours.record("a", "x", "s", "success")
        theirs.record("b", "x", "s", "success")
    assert store.refused == [2, 3]
    assert len(store.reads) == 10  # one look per append: the other's event, then write
    store.reads.clear()
    ours.record("a", "x", "s", "success")  # looks: b appended since, stays careful
    ours.record("a", "x", "s", "success")  # looks: nothing new, so next time blind
    ours.record("a", "x", "s", "success")  # writes without looking
    head = max(store.events)
    assert store.reads == [head - 3, head - 1]
    assert store.refused == [2, 3]
    assert verify(store).ok and sorted(store.events) == list(range(1, head + 1))


class _AlwaysLosingStore(MemoryAuditStore):
    def append(self, event: AuditEvent, expected_seq: int) -> None:
        raise Conflict("someone else won")


def test_record_gives_up_after_bounded_attempts() -> None:
    sleeps: list[float] = []
    log = AuditLog([_AlwaysLosingStore()], FixedClock(T0), max_attempts=5,
                   sleep=sleeps.append)
    with pytest.raises(Conflict):
        log.record("alice", "spec.create", "prod.api.www", "success")
    assert len(sleeps) == 5


PEM_KEY = ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
           "-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize("reason, details", [
    (None, {"private_key": "x"}),
    (None, {"token": "hvs.abc"}),
    (None, {"Password": "hunter2"}),
    (None, {"client-secret": "s"}),
    (None, {"nested": {"secret": "s"}}),
    (None, {"bundle": PEM_KEY}),
    (None, {"files": ["a", PEM_KEY]}),
    (None, {"ec": "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----"}),
    (f"failed to load {PEM_KEY}", None),
])
def test_key_material_is_refused_and_never_stored(reason: str | None,
                                                 details: dict | None) -> None:
    store = MemoryAuditStore()
    log = AuditLog([store], FixedClock(T0))
    with pytest.raises(ValueError) as info:
        log.record("alice", "certificate.issue", "prod.api.www", "failure",
                   reason=reason, details=details)
    assert "MIGHAgEA" not in str(info.value) and "hunter2" not in str(info.value)
    assert store.head() is None and store.events == {}


def test_public_facts_are_accepted_and_copied() -> None:
    store = MemoryAuditStore()
    log = AuditLog([store], FixedClock(T0))
    details = {"serial": "0a1b", "sha256_fingerprint": "ab" * 32, "targets": ["a:443"],
               "token_ttl": 900}
    event = log.record("alice", "certificate.issue", "prod.api.www", "success",
                       details=details)
    details["targets"].append("b:443")
    assert event.details["targets"] == ["a:443"]
    assert verify(store).ok


def test_bad_outcome_is_refused() -> None:
    log = AuditLog([MemoryAuditStore()], FixedClock(T0))
    with pytest.raises(ValueError):
        log.record("alice", "spec.create", "prod.api.www", "maybe")


def test_json_round_trip_keeps_the_hash() -> None:
    _, store, _ = _filled(3)
    event = store.events[2]
    assert AuditEvent.from_json(event.to_json()) == event
    assert AuditEvent.from_json(event.to_json()).computed_hash() == event.hash


def test_query_filters_newest_first_with_limit() -> None:
    log, store, _ = _filled(50)
    by_cert = query([store], certificate="prod.api.c3")
    assert [e.seq for e in by_cert] == [48, 43, 38, 33, 28, 23, 18, 13, 8, 3]
    issued = log.query(action="certificate.issue", actor="reconciler", limit=3)
    assert [e.seq for e in issued] == [48, 42, 36]
    window = query([store], since=T0 + dt.timedelta(minutes=9),
                   until=T0 + dt.timedelta(minutes=11))
    assert [e.seq for e in window] == [12, 11, 10]
    assert query([store], limit=0) == []
    assert len(query([store], limit=1000)) == 50
