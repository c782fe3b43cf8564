"""Retry schedule after failed issuances."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from certlocker.lifecycle.policy.backoff import (
    DECORRELATED,
    BackoffPolicy,
    cap,
    delay,
    exhausted,
    next_attempt,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
D = dt.timedelta
POLICY = BackoffPolicy(base=D(minutes=5), max_delay=D(hours=12), lifetime_fraction=1 / 20)


@pytest.mark.parametrize(
    ("lifetime", "expected_cap"),
    [
        pytest.param(D(days=90), D(hours=12), id="a 90-day cert is capped by the absolute max"),
        pytest.param(D(days=47), D(hours=12), id="a 47-day cert is capped by the absolute max"),
        pytest.param(D(days=6), D(hours=7, minutes=12),
                     id="a 6-day cert waits at most a twentieth of its life"),
        pytest.param(D(hours=1), D(minutes=3), id="a 1-hour cert waits at most 3 minutes"),
    ],
)
def test_cap_scales_with_lifetime(lifetime: dt.timedelta, expected_cap: dt.timedelta) -> None:
    assert cap(lifetime, POLICY) == expected_cap


@pytest.mark.parametrize(
    ("attempts", "lifetime", "low", "high"),
    [
        pytest.param(0, D(days=90), D(0), D(0), id="no failure means no wait"),
        pytest.param(1, D(days=90), D(minutes=5), D(minutes=5),
                     id="after one failure wait the base delay"),
        pytest.param(3, D(days=90), D(minutes=5), D(minutes=20),
                     id="after three failures wait up to four base delays"),
        pytest.param(30, D(days=90), D(minutes=5), D(hours=12),
                     id="after thirty failures a 90-day cert waits at most 12 hours"),
        pytest.param(30, D(days=6), D(minutes=5), D(hours=7, minutes=12),
                     id="after thirty failures a 6-day cert waits at most 7.2 hours"),
        pytest.param(5000, D(days=90), D(minutes=5), D(hours=12),
                     id="a huge attempt count does not overflow"),
        pytest.param(4, D(hours=1), D(minutes=3), D(minutes=3),
                     id="a cap below the base delay wins over the base"),
    ],
)
def test_full_jitter_stays_within_bounds(attempts: int, lifetime: dt.timedelta,
                                         low: dt.timedelta, high: dt.timedelta) -> None:
    rng = random.Random(attempts)
    for _ in range(200):
        assert low <= delay(attempts, lifetime, rng, policy=POLICY) <= high


def test_full_jitter_actually_jitters() -> None:
    rng = random.Random(11)
    delays = {delay(8, D(days=90), rng, policy=POLICY) for _ in range(50)}
    assert len(delays) > 10


def test_decorrelated_jitter_grows_from_the_previous_delay_within_the_cap() -> None:
    policy = BackoffPolicy(jitter=DECORRELATED)
    rng = random.Random(5)
    previous = D(minutes=10)
    for _ in range(200):
        got = delay(4, D(days=90), rng, previous=previous, policy=policy)
        assert policy.base <= got <= min(previous * 3, policy.max_delay)
    capped = delay(4, D(days=6), rng, previous=D(days=10), policy=policy)
    assert capped <= cap(D(days=6), policy)


def test_decorrelated_without_a_previous_delay_falls_back_to_full_jitter() -> None:
    policy = BackoffPolicy(jitter=DECORRELATED)
    got = delay(1, D(days=90), random.Random(1), policy=policy)
    assert got == policy.base


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param(NOW + D(hours=30), id="an absolute Retry-After"),
        pytest.param(D(hours=30), id="a Retry-After delay"),
        pytest.param(30 * 3600.0, id="a Retry-After in seconds as RateLimited carries it"),
    ],
)
def test_next_attempt_is_never_before_retry_after_even_past_the_cap(retry_after: object) -> None:
    at = next_attempt(2, NOW, D(days=6), random.Random(1), retry_after=retry_after,
                      policy=POLICY)
    assert at == NOW + D(hours=30)


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    rng_a, rng_b = random.Random(9), random.Random(9)
    plain = next_attempt(6, NOW, D(days=90), rng_a, policy=POLICY)
    with_hint = next_attempt(6, NOW, D(days=90), rng_b, retry_after=D(seconds=1),
                             policy=POLICY)
    assert with_hint == plain > NOW + D(seconds=1)


def test_next_attempt_adds_the_delay_to_now() -> None:
    at = next_attempt(1, NOW, D(days=90), random.Random(0), policy=POLICY)
    assert at == NOW + D(minutes=5)


@pytest.mark.parametrize(
    ("attempts", "not_after", "alert"),
    [
        pytest.param(2, NOW + D(days=20), False,
                     id="two failures with weeks to go is not worth an alert"),
        pytest.param(5, NOW + D(days=20), True, id="reaching max attempts alerts"),
        pytest.param(9, NOW + D(days=20), True, id="past max attempts alerts"),
        pytest.param(1, NOW + D(days=2), True, id="a failure with expiry inside the floor alerts"),
        pytest.param(0, NOW + D(days=2), True,
                     id="expiry inside the floor alerts even with no recorded failure"),
        pytest.param(0, NOW + D(days=20), False, id="no failure and time to spare is quiet"),
        pytest.param(2, None, False, id="no certificate yet and few failures is quiet"),
        pytest.param(5, None, True, id="no certificate yet and max failures alerts"),
        pytest.param(1, NOW - D(hours=1), True, id="an already expired certificate alerts"),
    ],
)
def test_exhausted(attempts: int, not_after: dt.datetime | None, alert: bool) -> None:
    assert exhausted(attempts, NOW, not_after, max_attempts=5,
                     expiry_floor=D(days=3)) is alert


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"jitter": "none"}, id="unknown jitter"),
        pytest.param({"base": D(0)}, id="zero base"),
        pytest.param({"lifetime_fraction": 0.0}, id="zero lifetime fraction"),
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]
