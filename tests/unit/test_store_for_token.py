"""A store for a caller's token shares the process's connection pool and retry policy,
and builds the full hvac client only when something other than KV v2 needs it."""

from __future__ import annotations

from certlocker.paths import VaultPaths
from certlocker.vault.client import RetryingAdapter
from certlocker.vault.store import VaultStore


def test_a_callers_store_acts_with_their_token_over_the_same_pool() -> None:
    own = VaultStore.connect("http://127.0.0.1:1", "own-token", VaultPaths(),
                             retry_seconds=3.0)
    theirs = own.for_token("their-token")
    client = theirs.hvac
    assert client.token == "their-token"
    assert own.hvac.token == "own-token"
    assert isinstance(client.adapter, RetryingAdapter)
    assert client.adapter.retry_seconds == 3.0
    assert client.adapter.session is own.hvac.adapter.session
    assert client.secrets.kv.v2._adapter is client.adapter
    assert client.url == own.hvac.url
