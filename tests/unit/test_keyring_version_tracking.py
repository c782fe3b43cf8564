"""A KeyRing built with ``track_version=True`` (as the API builds it) uses a rotation
made by another worker at once, and reads the key document only when it changed."""

from __future__ import annotations

import datetime as dt

import pytest

from certlocker.clock import FixedClock
from certlocker.credentials.keys import KeyRing
from certlocker.credentials.memory import MemorySigningKeyStore
from certlocker.credentials.tokens import TokenMinter
from certlocker.errors import VaultUnavailable


def _workers(store: MemorySigningKeyStore, clock: FixedClock) -> tuple[KeyRing, KeyRing]:
    return (KeyRing.load_or_create(store, clock, track_version=True),
            KeyRing.load_or_create(store, clock, track_version=True))


def test_a_rotation_in_one_worker_signs_in_every_worker_at_once() -> None:
    store = MemorySigningKeyStore()
    clock = FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    worker_a, worker_b = _workers(store, clock)
    old = worker_b.active
    new = worker_a.rotate()
    assert new.kid != old.kid
    # No time passes: the periodic refresh cannot be what moves worker B.
    assert worker_b.active.kid == new.kid
    assert [k["kid"] for k in worker_b.jwks()["keys"]] == [new.kid, old.kid]


def test_an_unchanged_document_is_not_read_again() -> None:
    store = MemorySigningKeyStore()
    clock = FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    ring = KeyRing.load_or_create(store, clock, track_version=True)
    loads = store.loads
    for _ in range(5):
        _ = ring.active
        ring.jwks()
    clock.advance(dt.timedelta(hours=1))
    _ = ring.active
    assert store.loads == loads


def test_a_token_of_another_workers_new_key_verifies_at_once() -> None:
    store = MemorySigningKeyStore()
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    worker_a, worker_b = _workers(store, clock)
    _ = worker_b.active  # worker B has loaded the old document
    worker_a.rotate()

    def minter(ring: KeyRing) -> TokenMinter:
        return TokenMinter(ring, clock, issuer="https://certlocker.test",
                           current_generation=lambda e, s: 0)

    token = minter(worker_a).mint("prod", "api", 0).token
    assert minter(worker_b).verify(token).kid == worker_a.active.kid


class DownAtFirst(MemorySigningKeyStore):
    """Vault down for the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise VaultUnavailable("Vault is sealed")

    def load(self):  # type: ignore[no-untyped-def]
        self._maybe_fail()
        return super().load()

    def version(self) -> int:
        self._maybe_fail()
        return super().version()


def test_a_ring_built_while_vault_is_down_reads_it_on_first_use_and_again_after() -> None:
    store = DownAtFirst(failures=2)
    clock = FixedClock(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    ring = KeyRing.on_first_use(store, clock, track_version=True)  # no Vault call here
    assert store.loads == 0
    for _ in range(2):
        with pytest.raises(VaultUnavailable):
            ring.jwks()
    [published] = ring.jwks()["keys"]  # Vault is back: the first key is made and stored
    assert store.saves == 1
    other = KeyRing.on_first_use(store, clock, track_version=True)
    assert other.active.kid == published["kid"]  # a second worker reads the same key
    assert store.saves == 1
