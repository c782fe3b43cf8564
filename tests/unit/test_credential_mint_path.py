"""The mint path: its independent reads run at the same time, and nothing it guards
(authorization, a revoked generation, a rotated key) is read stale or skipped."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from certlocker.audit.chain import AuditLog, verify
from certlocker.audit.memory import MemoryAuditStore
from certlocker.clock import FixedClock
from certlocker.credentials.keys import KeyRing
from certlocker.credentials.memory import MemorySigningKeyStore
from certlocker.credentials.service import CredentialService
from certlocker.credentials.tokens import TokenMinter
from certlocker.errors import AccessDenied, Conflict, Unauthenticated
from tests.support.threads import run_together
from tests.support.pools import threads

ISSUER = "https://certlocker.example.test"


class MemoryGenerations:
    """``GenerationStore`` in memory, with KV v2 check-and-set; ``before_read`` lets a
    test hold a read (it runs in the reading thread)."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[dict[str, Any], int]] = {}
        self.reads = 0
        self.before_read = lambda: None
        self._lock = threading.Lock()

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        self.before_read()
        with self._lock:
            self.reads += 1
            return self.documents.get(logical, (None, 0))

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int:
        with self._lock:
            _, version = self.documents.get(logical, (None, 0))
            if cas is not None and cas != version:
                raise Conflict(f"{logical} is at version {version}")
            self.documents[logical] = (dict(document), version + 1)
            return version + 1


class HeldKeyStore(MemorySigningKeyStore):
    """Signing keys in memory; ``before_version`` runs in the thread asking for the
    document's version (the read a tracking key ring makes before each use)."""

    def __init__(self) -> None:
        super().__init__()
        self.before_version = lambda: None

    def version(self) -> int:
        self.before_version()
        return super().version()


class RecordingIdentities:
    def __init__(self) -> None:
        self.ensured: list[tuple[str, str, int]] = []
        self.disabled: list[tuple[str, str, int]] = []

    def ensure(self, environment: str, service: str, generation: int) -> None:
        self.ensured.append((environment, service, generation))

    def disable(self, environment: str, service: str, generation: int) -> bool:
        self.disabled.append((environment, service, generation))
        return True


class Parts:
    def __init__(self) -> None:
        self.clock = FixedClock(dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        self.keys = HeldKeyStore()
        self.ring = KeyRing.load_or_create(self.keys, self.clock, track_version=True)
        self.generations = MemoryGenerations()
        self.identities = RecordingIdentities()
        self.audit_store = MemoryAuditStore()
        self.service = CredentialService(
            self.generations, lambda env, svc: f"system/credentials/{env}/{svc}",
            self.identities,
            lambda current: TokenMinter(self.ring, self.clock, issuer=ISSUER,
                                        current_generation=current),
            audit=AuditLog([self.audit_store], self.clock),
            lookups=threads(16, "credential-lookup"))


@pytest.fixture
def parts() -> Parts:
    return Parts()


def test_authorization_generation_and_key_are_read_at_the_same_time(parts: Parts) -> None:
    # Each of the three waits for the other two: done one after another, the first
    # would wait alone and the barrier would break.
    together = threading.Barrier(3, timeout=10)
    parts.generations.before_read = together.wait
    parts.keys.before_version = together.wait

    def authorize() -> str:
        together.wait()
        return "alice"

    minted = parts.service.mint("prod", "api", authorize=authorize)
    parts.generations.before_read = parts.keys.before_version = lambda: None
    claims = parts.service.minter.verify(minted.token, expected_environment="prod")
    assert (claims.service, claims.generation) == ("api", 1)
    event = parts.audit_store.events[1]
    assert (event.actor, event.action, event.outcome) == ("alice", "credential.mint", "success")
    assert event.details["jti"] == minted.jti and event.details["kid"] == minted.kid


def test_a_refused_caller_gets_nothing_and_no_success_is_recorded(parts: Parts) -> None:
    def refuse() -> str:
        raise AccessDenied("your Vault token may not manage credentials of prod/api")

    with pytest.raises(AccessDenied):
        parts.service.mint("prod", "api", authorize=refuse)
    assert parts.identities.ensured == []
    assert parts.audit_store.events == {}


def test_a_mint_after_a_revocation_uses_the_new_generation(parts: Parts) -> None:
    first = parts.service.mint("prod", "api", authorize=lambda: "alice")
    assert parts.service.revoke("prod", "api", actor="alice") == 2
    second = parts.service.mint("prod", "api", authorize=lambda: "alice")
    minter = parts.service.minter
    assert minter.verify(second.token).generation == 2
    with pytest.raises(Exception, match="revoked"):
        minter.verify(first.token)
    assert parts.identities.ensured == [("prod", "api", 1), ("prod", "api", 2)]
    assert parts.identities.disabled == [("prod", "api", 1)]
    assert verify(parts.audit_store).ok


def test_a_rotation_by_another_worker_signs_the_very_next_mint(parts: Parts) -> None:
    before = parts.service.mint("prod", "api", authorize=lambda: "alice")
    other_worker = KeyRing.load_or_create(parts.keys, parts.clock, track_version=True)
    rotated = other_worker.rotate()
    after = parts.service.mint("prod", "api", authorize=lambda: "alice")
    assert before.kid != rotated.kid
    assert after.kid == rotated.kid


def test_each_mint_reads_generation_and_key_version_afresh(parts: Parts) -> None:
    versions = []
    parts.keys.before_version = lambda: versions.append(1)
    for _ in range(3):
        parts.service.mint("prod", "api", authorize=lambda: "alice")
    assert parts.generations.reads == 3
    assert len(versions) == 3


def test_without_authorize_the_given_actor_is_recorded(parts: Parts) -> None:
    parts.service.mint("prod", "api", actor="service:prod/api", action="credential.refresh")
    event = parts.audit_store.events[1]
    assert (event.actor, event.action) == ("service:prod/api", "credential.refresh")


def test_the_key_ring_reads_versions_for_several_threads_at_once() -> None:
    """A tracking key ring must not hold its lock across the version read: the request
    threads of a worker would queue behind one another's Vault round trip."""
    keys = HeldKeyStore()
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    ring = KeyRing.load_or_create(keys, clock, track_version=True)
    together = threading.Barrier(2, timeout=10)
    keys.before_version = together.wait
    seen: list[str] = []
    errors = run_together(2, lambda _: seen.append(ring.active.kid), barrier=False)
    assert errors == []
    assert len(seen) == 2 and len(set(seen)) == 1


def test_a_refresh_for_an_environment_no_longer_served_is_refused_and_recorded(
        parts: Parts) -> None:
    token = parts.service.mint("prod", "api", actor="alice").token
    assert parts.service.refresh(token, "prod", "api", ("dev", "prod")).token != token
    with pytest.raises(Unauthenticated, match="no longer served"):
        parts.service.refresh(token, "prod", "api", ("dev",))
    denied = parts.audit_store.events[max(parts.audit_store.events)]
    assert (denied.action, denied.outcome) == ("credential.refresh", "denied")
    assert verify(parts.audit_store).ok
