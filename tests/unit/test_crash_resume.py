"""A process that dies in the middle of an issuance loses nothing: the next process (a
new CertificateService and AcmeIssuer over the same storage) resumes with the key that
was journaled, and with the same ACME order once one was recorded.

Real CertificateService and AcmeIssuer; honest in-memory fakes for Vault (MemoryStore)
and the CA (FakeAcme, at the HTTP transport). The "crash" is an exception nothing
catches, raised right after a chosen write to the in-flight journal reached storage.
"""

from __future__ import annotations

from typing import Any

import pytest

from certlocker.issuance import keys
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.lifecycle.service import CertificateService
from certlocker.lifecycle.records.vault_adapters import StoreAccounts, StoreChallenges
from certlocker.models import CertificateRef, CertificateSpec, State
from certlocker.settings import IssuerSettings
from tests.support.fake_acme import FakeAcme
from tests.support.memory_store import MemoryStore, grant
from tests.support.pools import certificate_pools

REF = CertificateRef("dev", "web", "www")


class ProcessDied(BaseException):
    """Stands for SIGKILL: no ``except Exception`` in the code under test stops it."""


class CrashingStore(MemoryStore):
    """MemoryStore that dies right after its ``crash_after``-th write to the in-flight
    journal is stored, or just before its ``crash_before``-th one would be (0: never),
    or just before or after the status record is written (``crash_at_status``)."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_after = 0
        self.crash_before = 0
        self.crash_at_status: str | None = None  # "before" or "after"
        self.journal_writes = 0

    def write(self, logical: str, data: dict[str, Any], cas: int | None) -> int:
        if logical == self.paths.status(REF) and self.crash_at_status == "before":
            raise ProcessDied(logical)
        if logical == self.paths.status(REF) and self.crash_at_status == "after":
            super().write(logical, data, cas)
            raise ProcessDied(logical)
        journal = logical == self.paths.inflight(REF)
        if journal and self.journal_writes + 1 == self.crash_before:
            raise ProcessDied(logical)
        version = super().write(logical, data, cas)
        if journal:
            self.journal_writes += 1
            if self.journal_writes == self.crash_after:
                raise ProcessDied(logical)
        return version


class ChallengeView(dict):  # type: ignore[type-arg]
    """What the fake CA reads for http-01: the answers stored in the MemoryStore."""

    def __init__(self, challenges: StoreChallenges) -> None:
        super().__init__()
        self._challenges = challenges

    def get(self, token: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._challenges.get(token) or default


def process(store: MemoryStore, ca: FakeAcme) -> CertificateService:
    """What one certlocker process builds: its own issuer and service over shared storage."""
    challenges = StoreChallenges(store)
    ca.http01 = ChallengeView(challenges)
    conf = IssuerSettings(name="fake", directory_url=ca.directory_url)
    issuer = AcmeIssuer(conf, StoreAccounts(store, ca.directory_url), challenges,
                        transport=ca, sleep=lambda s: None, caa_lookup=lambda name: [])
    return CertificateService(store, {"fake": issuer}, pools=certificate_pools(1))


@pytest.fixture
def world() -> tuple[CrashingStore, FakeAcme]:
    store = CrashingStore()
    store.create_spec(CertificateSpec(REF, ("www.example.test",), "fake"))
    grant(store, CertificateSpec(REF, ("www.example.test",), "fake"))
    return store, FakeAcme()


def journal(store: MemoryStore) -> dict[str, Any] | None:
    return store.read_json(store.paths.inflight(REF))[0]


def stored_key_pem(store: MemoryStore) -> str:
    return store.require(store.paths.cert(REF))["private_key"]


def same_key(a: str, b: str) -> bool:
    return keys.to_pem(keys.from_pem(a)) == keys.to_pem(keys.from_pem(b))


def test_a_crash_before_anything_is_journaled_leaves_only_an_unanswered_order(
        world) -> None:
    store, ca = world
    store.crash_before = 1  # the order exists at the CA; its key was never sent there
    with pytest.raises(ProcessDied):
        process(store, ca).issue(REF)
    assert journal(store) is None
    (orphan,) = ca.orders
    assert ca.payloads(f"finalize/{orphan}") == []

    store.crash_before = 0
    status = process(store, ca).issue(REF)

    assert status.state is State.VALID
    assert len(ca.orders) == 2  # a fresh order with a fresh key; the orphan expires
    assert ca.payloads(f"finalize/{orphan}") == []
    assert journal(store) is None


def test_the_key_and_the_order_are_journaled_before_the_ca_sees_the_key(world) -> None:
    store, ca = world
    store.crash_after = 1  # one journal write: the key with its order; nothing finalized
    with pytest.raises(ProcessDied):
        process(store, ca).issue(REF)
    crashed = journal(store)
    assert crashed is not None and crashed["private_key"] and crashed["order_url"]
    order = crashed["order_url"].rsplit("/", 1)[1]
    assert list(ca.orders) == [order]
    assert ca.payloads(f"finalize/{order}") == []

    store.crash_after = 0
    status = process(store, ca).issue(REF)

    assert status.state is State.VALID
    assert same_key(stored_key_pem(store), crashed["private_key"])
    assert len(ca.orders) == 1  # the recorded order was finished, no orphan
    assert ca.orders[order]["status"] == "valid"
    assert journal(store) is None


def test_an_issuance_writes_the_journal_once(world) -> None:
    store, ca = world
    process(store, ca).issue(REF)
    assert store.journal_writes == 1


def test_a_finished_issuance_never_reuses_its_key(world) -> None:
    store, ca = world
    process(store, ca).issue(REF)
    first = stored_key_pem(store)
    process(store, ca).issue(REF)
    assert not same_key(stored_key_pem(store), first)


@pytest.mark.parametrize("when", ["before", "after"])
def test_no_key_in_service_stays_in_the_journal_whenever_the_process_dies(
        world, when: str) -> None:
    """Dying just before or just after the status write: the certificate (with its key)
    is stored and the journal's copy of the key is already gone, because a VALID
    certificate's journal is never looked at again."""
    store, ca = world
    store.crash_at_status = when
    with pytest.raises(ProcessDied):
        process(store, ca).issue(REF)
    assert journal(store) is None
    assert stored_key_pem(store)

    store.crash_at_status = None
    status = process(store, ca).issue(REF)
    assert status.state is State.VALID and journal(store) is None
