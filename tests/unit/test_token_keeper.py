"""The keeper of certlocker's own Vault token: when it renews, when it only checks, and
what it says when the token cannot be kept. A fake token with a fake clock; the real
renewal against OpenBao is in tests/integration/test_reconciler.py."""

from __future__ import annotations

import logging
import threading

import pytest

from certlocker.errors import Unauthenticated, VaultUnavailable
from certlocker.vault.token_keeper import (CHECK_AT_MOST_EVERY, RETRY_AFTER_FAILURE, TokenKeeper,
                                     TokenLife)


class FakeToken:
    """A token that lives ``ttl`` seconds on a clock the test moves."""

    def __init__(self, ttl: int, *, period: int = 0, creation_ttl: int = 0,
                 renewable: bool = True, max_left: int | None = None) -> None:
        self.now = 1000.0
        self.expires = self.now + ttl if ttl else None
        self.full = period or creation_ttl
        self.renewable = renewable
        self.max_at = None if max_left is None else self.now + max_left
        self.lookups = 0
        self.renewals: list[int] = []
        self.fail: Exception | None = None

    def clock(self) -> float:
        return self.now

    def token_life(self) -> TokenLife:
        self.lookups += 1
        if self.fail is not None:
            raise self.fail
        if self.expires is not None and self.expires <= self.now:
            raise Unauthenticated("the Vault token is invalid or expired")
        ttl = 0 if self.expires is None else int(self.expires - self.now)
        return TokenLife(ttl=ttl, full=self.full, renewable=self.renewable)

    def renew_self(self, increment: int) -> TokenLife:
        assert self.renewable
        self.renewals.append(increment)
        self.expires = self.now + self.full
        if self.max_at is not None:
            self.expires = min(self.expires, self.max_at)
        return self.token_life()


def test_a_periodic_token_is_renewed_once_half_its_period_is_gone_and_lives_on() -> None:
    token = FakeToken(86400, period=86400)
    keeper = TokenKeeper(token, token.clock)
    for _ in range(7 * 24 * 60):  # a week, asked every minute
        keeper.keep()
        token.now += 60
    # One renewal per half period, a check per hour at most in between: never lapsed.
    assert len(token.renewals) == 7 * 2 - 1, token.renewals
    assert token.lookups < 7 * 24 + len(token.renewals) * 2 + 2
    assert token.expires is not None and token.expires - token.now > 86400 / 2 - 120


def test_nothing_is_renewed_while_more_than_half_is_left() -> None:
    token = FakeToken(86400, period=86400)
    keeper = TokenKeeper(token, token.clock)
    assert keeper.keep() == CHECK_AT_MOST_EVERY
    token.now += 10
    keeper.keep()  # not due: no Vault call at all
    assert (token.lookups, token.renewals) == (1, [])


def test_a_short_period_is_renewed_in_time() -> None:
    token = FakeToken(8, period=8)
    keeper = TokenKeeper(token, token.clock)
    for _ in range(60 * 4):  # a minute, asked every quarter second
        keeper.keep()
        token.now += 0.25
    assert token.token_life().ttl > 0
    assert len(token.renewals) >= 60 // 8


def test_a_non_periodic_token_asks_for_its_creation_ttl_and_warns_near_its_max_ttl(
        caplog: pytest.LogCaptureFixture) -> None:
    token = FakeToken(3600, creation_ttl=3600, max_left=4000)
    keeper = TokenKeeper(token, token.clock)
    token.now += 1900
    with caplog.at_level(logging.INFO):
        keeper.keep()
    assert token.renewals == [3600]
    # 4000 - 1900 = 2100 s left: less than the full hour comes back, but more than half.
    assert "vault.token_expiring" not in caplog.messages
    token.now += 1000
    with caplog.at_level(logging.INFO):
        keeper.keep()  # 1100 s left, capped: renewing cannot help any more
    assert "vault.token_expiring" in caplog.messages


def test_a_token_that_cannot_be_renewed_is_reported_not_renewed(
        caplog: pytest.LogCaptureFixture) -> None:
    token = FakeToken(1000, creation_ttl=3600, renewable=False)
    keeper = TokenKeeper(token, token.clock)
    with caplog.at_level(logging.WARNING):
        wait = keeper.keep()
    assert token.renewals == []
    assert "vault.token_expiring" in caplog.messages
    assert wait == 250  # asks again as the end nears, to keep saying so


def test_a_token_that_never_expires_is_left_alone() -> None:
    token = FakeToken(0)
    keeper = TokenKeeper(token, token.clock)
    assert keeper.keep() == CHECK_AT_MOST_EVERY
    assert token.renewals == []


@pytest.mark.parametrize("failure", [VaultUnavailable("Vault is sealed"),
                                     Unauthenticated("the Vault token is invalid")])
def test_a_failed_check_is_logged_and_retried_later(
        failure: Exception, caplog: pytest.LogCaptureFixture) -> None:
    token = FakeToken(100, period=86400)
    token.fail = failure
    keeper = TokenKeeper(token, token.clock)
    with caplog.at_level(logging.WARNING):
        assert keeper.keep() == RETRY_AFTER_FAILURE
    assert "vault.token_renew_failed" in caplog.messages
    token.fail = None
    token.now += RETRY_AFTER_FAILURE
    keeper.keep()
    assert token.renewals == [86400]


def test_the_keeper_thread_survives_a_surprise_and_stops_when_asked(
        caplog: pytest.LogCaptureFixture) -> None:
    token = FakeToken(100, period=86400)
    token.fail = KeyError("ttl")
    keeper = TokenKeeper(token, token.clock)
    stop = threading.Event()
    thread = threading.Thread(target=keeper.run, args=(stop,))
    with caplog.at_level(logging.ERROR):
        thread.start()
        for _ in range(200):
            if "vault.token_keeper_failed" in caplog.messages:
                break
            stop.wait(0.01)
        assert thread.is_alive()
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert "vault.token_keeper_failed" in caplog.messages
