"""The /metrics scrape token: from the environment or a file, validated at start, never
in a repr (settings end up in logs and tracebacks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from certlocker import settings
from certlocker.errors import ConfigurationError

ENV = {"CERTLOCKER_VAULT_ADDR": "http://127.0.0.1:8200", "CERTLOCKER_VAULT_TOKEN": "t"}
TOKEN = "scrape-" + "x" * 30


def test_the_token_is_read_from_its_file_and_kept_out_of_repr(tmp_path: Path) -> None:
    path = tmp_path / "metrics.token"
    path.write_text(TOKEN + "\n")
    loaded = settings.load(None, {**ENV, "CERTLOCKER_METRICS_TOKEN_FILE": str(path)})
    assert loaded.metrics_token == TOKEN
    assert TOKEN not in repr(loaded)
    assert settings.load(None, ENV).metrics_token is None  # off unless configured


@pytest.mark.parametrize("value", ["short", "has a space in it here", "x" * 4097])
def test_a_weak_or_malformed_token_fails_at_start(value: str) -> None:
    with pytest.raises(ConfigurationError, match="metrics_token must be"):
        settings.load(None, {**ENV, "CERTLOCKER_METRICS_TOKEN": value})


def test_an_unreadable_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="metrics_token_file: cannot read"):
        settings.load(None, {**ENV, "CERTLOCKER_METRICS_TOKEN_FILE": str(tmp_path / "no")})
