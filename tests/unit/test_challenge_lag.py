"""An http-01 answer read through a Vault standby that lags the write (vault_adapters)."""

from __future__ import annotations

from typing import Any

from certlocker.lifecycle.records.vault_adapters import StoreChallenges
from tests.support.memory_store import MemoryStore


class LaggingStore(MemoryStore):
    """Reads miss a path until it has been read ``lag`` times after its write."""

    def __init__(self, lag: int) -> None:
        super().__init__()
        self.lag = lag
        self.reads = 0

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        self.reads += 1
        if self.reads <= self.lag:
            return None, 0
        return super().read_json(logical)


def test_a_lagging_replica_is_asked_again_before_the_answer_is_missing() -> None:
    store = LaggingStore(lag=2)
    StoreChallenges(store).put("tok", "tok.thumb")
    assert StoreChallenges(store).get("tok") == "tok.thumb"
    assert store.reads == 3


def test_an_unknown_token_is_missing_after_the_bounded_wait() -> None:
    store = LaggingStore(lag=0)
    assert StoreChallenges(store, miss_wait=0.2).get("nope") is None
    assert 2 <= store.reads <= 4  # 0.05 + 0.1 s of pauses fit in 0.2 s, not more


def test_without_a_wait_a_miss_is_answered_at_once() -> None:
    store = LaggingStore(lag=5)
    StoreChallenges(store).put("tok", "tok.thumb")
    assert StoreChallenges(store, miss_wait=0).get("tok") is None
    assert store.reads == 1
