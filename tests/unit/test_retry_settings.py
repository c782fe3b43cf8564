"""The retry and timing settings: how long a Vault call rides out an election, the first
issuance retry delay, the fleet's delivery time a replacement's ETA counts. Validated
at start, read from the environment."""

from __future__ import annotations

import pytest

from certlocker import settings
from certlocker.errors import ConfigurationError

ENV = {"CERTLOCKER_VAULT_ADDR": "http://127.0.0.1:8200", "CERTLOCKER_VAULT_TOKEN": "t"}


def test_defaults_and_environment() -> None:
    default = settings.load(None, ENV).validate()
    assert (default.vault_retry_seconds, default.retry_base_seconds) == (10, 300)
    tuned = settings.load(None, {**ENV, "CERTLOCKER_VAULT_RETRY_SECONDS": "30",
                                 "CERTLOCKER_RETRY_BASE_SECONDS": "2"}).validate()
    assert (tuned.vault_retry_seconds, tuned.retry_base_seconds) == (30, 2)
    assert default.delivery_seconds == 30  # templates/agent.hcl's render interval
    assert settings.load(None, {**ENV, "CERTLOCKER_DELIVERY_SECONDS": "60"}).validate(
        ).delivery_seconds == 60


@pytest.mark.parametrize("key, value", [
    ("CERTLOCKER_VAULT_RETRY_SECONDS", "-1"), ("CERTLOCKER_VAULT_RETRY_SECONDS", "601"),
    ("CERTLOCKER_VAULT_RETRY_SECONDS", "soon"), ("CERTLOCKER_RETRY_BASE_SECONDS", "0"),
    ("CERTLOCKER_DELIVERY_SECONDS", "-1"), ("CERTLOCKER_DELIVERY_SECONDS", "a minute"),
])
def test_out_of_range_fails_at_start(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=key[len("CERTLOCKER_"):].lower()):
        settings.load(None, {**ENV, key: value}).validate()
