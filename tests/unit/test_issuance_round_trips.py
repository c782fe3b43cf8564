"""What a declaration and an issuance cost in storage round trips, and that the cheaper
paths keep their guarantees: a new certificate reads as pending without a status
record, an old tombstone is still reset, the public leaf travels in the status record
(older records keep working from the separate leaf document), and http-01 answers are
served from memory by the process that published them, from storage by any other.

Real CertificateService and AcmeIssuer; honest in-memory fakes for Vault (MemoryStore,
which counts its calls) and the CA (FakeAcme, at the HTTP transport).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
from typing import Any, Iterator

import pytest

from certlocker.issuance import keys
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.issuance.ari import cert_id
from certlocker.lifecycle import renewal_info
from certlocker.lifecycle.local_challenges import LocalFirstChallenges
from certlocker.lifecycle.service import CertificateService
from certlocker.lifecycle.records.vault_adapters import StoreAccounts, StoreChallenges
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, State)
from certlocker.settings import IssuerSettings
from tests.support.fake_acme import FakeAcme
from tests.support.memory_store import MemoryStore, grant
from tests.support.pools import certificate_pools

REF = CertificateRef("dev", "web", "www")
SPEC = CertificateSpec(REF, ("www.example.test",), "fake")


class Answers(dict):  # type: ignore[type-arg]
    """What the fake CA reads for http-01: whatever the challenge store answers."""

    def __init__(self, challenges: Any) -> None:
        super().__init__()
        self._challenges = challenges

    def get(self, token: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._challenges.get(token) or default


@contextlib.contextmanager
def service_over(store: MemoryStore, ca: FakeAcme,
                 challenges: Any = None) -> Iterator[CertificateService]:
    challenges = challenges or StoreChallenges(store)
    ca.http01 = Answers(challenges)
    conf = IssuerSettings(name="fake", directory_url=ca.directory_url)
    issuer = AcmeIssuer(conf, StoreAccounts(store, ca.directory_url), challenges,
                        transport=ca, sleep=lambda s: None, caa_lookup=lambda name: [])
    service = CertificateService(store, {"fake": issuer}, pools=certificate_pools(1))
    try:
        yield service
    finally:
        service.shutdown()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def service(store: MemoryStore):
    scheduled: list[CertificateRef] = []
    first: list[bool] = []

    def schedule(ref: CertificateRef, *, first_lease: bool = False, **declared: object
                 ) -> cf.Future[CertificateStatus]:
        scheduled.append(ref)  # the issuance is not run: only the declaration is tested
        first.append(first_lease)
        return cf.Future()
    with service_over(store, FakeAcme()) as made:
        made.schedule = schedule  # type: ignore[method-assign]
        made.scheduled = scheduled  # type: ignore[attr-defined]
        made.first = first  # type: ignore[attr-defined]
        yield made


# -- declare ----------------------------------------------------------------------------

def test_declaring_a_new_certificate_writes_no_status_and_reads_as_pending(
        store: MemoryStore, service: CertificateService) -> None:
    grant(store, SPEC)
    store.calls.clear()
    future, pending = service.declare_with_status(store, SPEC)
    assert pending.state is State.PENDING
    assert store.read_status(REF) is None
    assert service.view(store, REF).status.state is State.PENDING
    assert service.scheduled == [REF]  # type: ignore[attr-defined]
    assert service.first == [True]  # type: ignore[attr-defined]
    assert store.calls["write"] == 1  # the spec; no due index and no audit configured
    # the names were granted: the declaration read the grant and who holds the name
    assert store.paths.grant("dev", "web") in store.paths_read


def test_an_administrators_declaration_grants_the_service_its_names(
        store: MemoryStore, service: CertificateService) -> None:
    service.declare_with_status(store, SPEC)  # the memory store may do anything: an admin
    grant_doc, _ = store.read_json(store.paths.grant("dev", "web"))
    assert grant_doc is not None and grant_doc["dns_names"] == ["www.example.test"]


def test_redeclaring_over_a_retired_tombstone_resets_it_to_pending(
        store: MemoryStore, service: CertificateService) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    tombstone = CertificateStatus(state=State.RETIRED, history=("ab",), retired_at=now,
                                  last_error="old", updated_at=now)
    store.write_status(REF, tombstone, cas=0)
    _, pending = service.declare_with_status(store, SPEC)
    stored = store.read_status(REF)
    assert stored is not None and stored[0] == pending
    assert pending.state is State.PENDING and pending.history == ("ab",)
    assert pending.last_error is None and pending.retired_at is None
    assert service.first == [False]  # type: ignore[attr-defined]


# -- issue ------------------------------------------------------------------------------

def test_an_issuance_keeps_the_leaf_in_the_status_and_writes_no_leaf_document(
        store: MemoryStore) -> None:
    store.create_spec(SPEC)
    grant(store, SPEC)
    with service_over(store, FakeAcme()) as service:
        status = service.issue(REF)
    assert status.state is State.VALID and status.current is not None
    assert status.current.leaf_pem == store.require(store.paths.cert(REF))["certificate"]
    assert store.read_json(store.paths.leaf(REF))[0] is None
    assert "leaf_pem" not in repr(status.current)


def test_a_fresh_issuance_costs_these_storage_calls(store: MemoryStore) -> None:
    """A regression guard on the round trips of one issuance, not a timing: lease read
    and write, spec, grant and name holder, status, journal load, ACME account load;
    then the journal (once),
    the http-01 answer, the certificate, the status, the expiry index entry, the lease
    release; and the journal and answer removed (no due index or audit configured)."""
    store.create_spec(SPEC)
    grant(store, SPEC)
    with service_over(store, FakeAcme()) as service:
        service.issue(REF)  # the first also creates the ACME account: not counted
        store.calls.clear()
        service.issue(REF)
    assert store.calls["write"] == 7
    assert store.calls["destroy"] == 2  # journal, answer


def test_a_just_declared_certificate_skips_the_reads_its_first_lease_makes_needless(
        store: MemoryStore) -> None:
    """Its lease is created without reading it first, and a lease that had never existed
    means no journal to resume and no status to replace: spec, the service's grant, who
    holds each name and the account are the only reads; the writes are those of any
    issuance (the name was claimed by the first issuance)."""
    store.create_spec(SPEC)
    grant(store, SPEC)
    other = CertificateSpec(CertificateRef("dev", "web", "other"), SPEC.dns_names, "fake")
    store.create_spec(other)
    grant(store, other)
    with service_over(store, FakeAcme()) as service:
        service.issue(other.ref)  # creates the ACME account: not counted
        store.calls.clear()
        store.paths_read.clear()
        status = service.issue(REF, first_lease=True)
    assert status.state is State.VALID
    ours = [p for p in store.paths_read if not p.startswith("system/challenges/")]
    assert ours == [store.paths.spec(REF), store.paths.grant("dev", "web"),
                    store.paths.name_claim("www.example.test")]  # the CA's read: not ours
    assert store.calls["write"] == 7
    assert store.versions(store.paths.cert(REF)) == 1


def test_a_wrong_guess_of_a_first_lease_reads_and_resumes_as_usual(
        store: MemoryStore) -> None:
    """A lease left by an earlier attempt (released, its journaled key kept) makes the
    create-only lease write fail; the issuance then reads the lease, the journal and the
    status as always, and reuses the journaled key."""
    store.create_spec(SPEC)
    grant(store, SPEC)
    key = keys.to_pem(keys.generate(SPEC.key_type))
    store.write_json(store.paths.lease(REF), {"holder": None, "expires": 0}, cas=0)
    store.write_json(store.paths.inflight(REF), {
        "private_key": key, "dns_names": list(SPEC.dns_names), "issuer": "fake",
        "key_type": SPEC.key_type.value}, cas=None)
    with service_over(store, FakeAcme()) as service:
        status = service.issue(REF, first_lease=True)
    assert status.state is State.VALID
    assert {store.paths.lease(REF), store.paths.inflight(REF),
            store.paths.status(REF)} <= set(store.paths_read)
    stored = store.require(store.paths.cert(REF))["private_key"]
    assert keys.to_pem(keys.from_pem(stored)) == key
    assert store.read_json(store.paths.inflight(REF))[0] is None


def test_another_holders_lease_is_respected_when_a_first_lease_was_guessed(
        store: MemoryStore) -> None:
    store.create_spec(SPEC)
    grant(store, SPEC)
    store.write_json(store.paths.lease(REF), {"holder": "elsewhere", "expires": 2e9}, cas=0)
    with service_over(store, FakeAcme()) as service:
        status = service.issue(REF, first_lease=True)
    assert status.current is None
    assert store.versions(store.paths.cert(REF)) == 0


def test_older_records_without_the_leaf_use_the_leaf_document(store: MemoryStore) -> None:
    store.create_spec(SPEC)
    grant(store, SPEC)
    with service_over(store, FakeAcme()) as service:
        status = service.issue(REF)
    assert status.current is not None and status.current.leaf_pem is not None
    pem = status.current.leaf_pem
    old = CertificateInfo.from_json({k: v for k, v in status.current.to_json().items()
                                     if k != "leaf_pem"})
    assert old.leaf_pem is None
    store.write_json(store.paths.leaf(REF), {"serial": old.serial, "certificate": pem},
                     cas=None)
    assert renewal_info.current_leaf(store, REF, old) == pem
    previous = CertificateStatus(state=State.VALID, current=old)
    assert renewal_info.replaces_for(store, SPEC, previous) == cert_id(pem)
    other = CertificateInfo.from_json({**old.to_json(), "serial": "not-it"})
    assert renewal_info.current_leaf(store, REF, other) is None


# -- http-01 answers --------------------------------------------------------------------

class CountingShared:
    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.gets = 0

    def put(self, token: str, key_authorization: str) -> None:
        self.answers[token] = key_authorization

    def get(self, token: str) -> str | None:
        self.gets += 1
        return self.answers.get(token)

    def delete(self, token: str) -> None:
        self.answers.pop(token, None)


def test_the_publishing_process_answers_from_memory_and_others_from_storage() -> None:
    shared = CountingShared()
    mine, other = LocalFirstChallenges(shared), LocalFirstChallenges(shared)
    mine.put("t1", "t1.thumb")
    assert shared.answers == {"t1": "t1.thumb"}  # any replica can answer
    assert mine.get("t1") == "t1.thumb" and shared.gets == 0
    assert other.get("t1") == "t1.thumb" and shared.gets == 1
    mine.delete("t1")
    assert shared.answers == {} and mine.get("t1") is None
    assert LocalFirstChallenges(shared).get("t1") is None


def test_an_answer_read_from_storage_is_kept_briefly_for_the_next_vantage_point() -> None:
    shared, now = CountingShared(), [0.0]
    publisher = LocalFirstChallenges(shared)
    other = LocalFirstChallenges(shared, read_ttl=30, clock=lambda: now[0])
    publisher.put("t1", "t1.thumb")
    assert [other.get("t1") for _ in range(3)] == ["t1.thumb"] * 3
    assert shared.gets == 1
    now[0] = 31.0
    publisher.delete("t1")
    assert other.get("t1") is None and shared.gets == 2
    assert other.get("nothing") is None and other.get("nothing") is None
    assert shared.gets == 4  # a missing answer is not remembered


def test_a_failed_put_is_not_served_from_memory() -> None:
    class Down(CountingShared):
        def put(self, token: str, key_authorization: str) -> None:
            raise RuntimeError("storage down")
    challenges = LocalFirstChallenges(Down())
    with pytest.raises(RuntimeError):
        challenges.put("t1", "t1.thumb")
    assert challenges.get("t1") is None


def test_answers_whose_cleanup_failed_are_bounded_in_memory() -> None:
    shared = CountingShared()
    challenges = LocalFirstChallenges(shared, capacity=2)
    for token in ("a", "b", "c"):
        challenges.put(token, token + ".thumb")
    shared.answers.clear()
    assert [challenges.get(t) for t in ("c", "b", "a")] == ["c.thumb", "b.thumb", None]


def test_an_issuance_through_the_local_first_store_leaves_no_answer_behind(
        store: MemoryStore) -> None:
    store.create_spec(SPEC)
    grant(store, SPEC)
    challenges = LocalFirstChallenges(StoreChallenges(store))
    with service_over(store, FakeAcme(), challenges) as service:
        assert service.issue(REF).state is State.VALID
    assert store.list(store.paths.http01("x").rsplit("/", 1)[0]) == []


def test_concurrent_requests_for_one_token_share_one_read() -> None:
    import threading
    import time

    release = threading.Event()

    class Slow(CountingShared):
        def get(self, token: str) -> str | None:
            release.wait(5)
            return super().get(token)
    shared = Slow()
    shared.answers["t1"] = "t1.thumb"
    challenges = LocalFirstChallenges(shared)
    with cf.ThreadPoolExecutor(3) as pool:
        asked = [pool.submit(challenges.get, "t1") for _ in range(3)]
        deadline = time.monotonic() + 5
        while not challenges._reading and time.monotonic() < deadline:
            time.sleep(0.001)  # until the first asker is reading
        release.set()
        assert [f.result(timeout=5) for f in asked] == ["t1.thumb"] * 3
    assert shared.gets == 1
