"""A KeyRing built with ``track_version=True`` (as the API builds it) uses a rotation
made by another worker at once, and reads the key document only when it changed."""

from __future__ import annotations

import datetime as dt

from certlocker.clock import FixedClock
from certlocker.credentials.keys import KeyRing
from certlocker.credentials.memory import MemorySigningKeyStore
from certlocker.credentials.tokens import TokenMinter


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
        ring.active
        ring.jwks()
    clock.advance(dt.timedelta(hours=1))
    ring.active
    assert store.loads == loads


def test_a_token_of_another_workers_new_key_verifies_at_once() -> None:
    store = MemorySigningKeyStore()
    clock = FixedClock(dt.datetime.now(dt.timezone.utc))
    worker_a, worker_b = _workers(store, clock)
    worker_b.active  # worker B has loaded the old document
    worker_a.rotate()

    def minter(ring: KeyRing) -> TokenMinter:
        return TokenMinter(ring, clock, issuer="https://certlocker.test",
                           current_generation=lambda e, s: 0)

    token = minter(worker_a).mint("prod", "api", 0).token
    assert minter(worker_b).verify(token).kid == worker_a.active.kid
