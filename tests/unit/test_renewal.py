"""Renewal time as a table: each case id reads as the rule it checks."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from certlocker.errors import InvalidInput
from certlocker.lifecycle.policy.renewal import (
    Duration,
    Fraction,
    is_due,
    parse_renew_before,
    plan_renewal,
    renewal_time,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
D = dt.timedelta


def days(n: float) -> dt.timedelta:
    return D(days=n)


@pytest.mark.parametrize(
    ("lifetime", "renew_before", "expected_left", "source"),
    [
        pytest.param(days(90), None, days(30), "default",
                     id="a 90-day certificate renews with 30 days left by default"),
        pytest.param(days(47), None, D(days=15, hours=16), "default",
                     id="a 47-day certificate renews with 15 days 16 hours left by default"),
        pytest.param(days(6), None, days(2), "default",
                     id="a 6-day certificate renews with 2 days left by default"),
        pytest.param(days(90), "720h", days(30), "renew-before",
                     id="renew_before 720h renews 30 days before expiry"),
        pytest.param(days(90), "14d", days(14), "renew-before",
                     id="renew_before 14d renews 14 days before expiry"),
        pytest.param(days(90), "1h30m", D(hours=1, minutes=30), "renew-before",
                     id="renew_before 1h30m combines units"),
        pytest.param(days(90), "0.5", days(45), "renew-before",
                     id="renew_before 0.5 renews at half the lifetime"),
        pytest.param(days(90), "10%", days(9), "renew-before",
                     id="renew_before 10% renews with a tenth of the lifetime left"),
        pytest.param(days(6), "30d", days(2), "renew-before-clamped",
                     id="renew_before longer than the lifetime falls back to one third left"),
        pytest.param(days(30), "30d", days(10), "renew-before-clamped",
                     id="renew_before equal to the lifetime falls back to one third left"),
    ],
)
def test_renewal_time_without_ari(lifetime: dt.timedelta, renew_before: str | None,
                                  expected_left: dt.timedelta, source: str) -> None:
    not_after = T0 + lifetime
    plan = plan_renewal(T0, not_after, renew_before=renew_before)
    assert plan.at == not_after - expected_left
    assert plan.source == source
    assert renewal_time(T0, not_after, renew_before=renew_before) == plan.at


def test_renewal_time_is_whole_seconds_for_awkward_lifetimes() -> None:
    at = renewal_time(T0, T0 + D(days=1, seconds=1))
    assert at.microsecond == 0
    assert T0 + D(hours=16) <= at <= T0 + D(hours=16, seconds=1)


WINDOW = (T0 + days(60), T0 + days(62))


@pytest.mark.parametrize("seed", range(20))
def test_an_ari_window_overrides_the_default_with_a_random_time_inside_it(seed: int) -> None:
    plan = plan_renewal(T0, T0 + days(90), ari_window=WINDOW, rng=random.Random(seed),
                        ari_explanation_url="https://ca.example/why")
    assert WINDOW[0] <= plan.at <= WINDOW[1]
    assert plan.source == "ari"
    assert plan.explanation_url == "https://ca.example/why"


def test_ari_picks_are_spread_across_the_window_not_pinned_to_one_end() -> None:
    rng = random.Random(7)
    picks = {renewal_time(T0, T0 + days(90), ari_window=WINDOW, rng=rng) for _ in range(50)}
    midpoint = WINDOW[0] + (WINDOW[1] - WINDOW[0]) / 2
    assert any(p < midpoint for p in picks) and any(p > midpoint for p in picks)


def test_an_ari_window_that_is_already_over_means_renew_now() -> None:
    now = T0 + days(70)
    plan = plan_renewal(T0, T0 + days(90), ari_window=WINDOW, now=now,
                        rng=random.Random(1))
    assert (plan.at, plan.source) == (now, "ari-past")
    assert is_due(now, plan.at)


def test_an_ari_window_earlier_than_the_default_pulls_renewal_forward() -> None:
    early = (T0 + days(10), T0 + days(11))
    at = renewal_time(T0, T0 + days(90), ari_window=early, rng=random.Random(3))
    assert early[0] <= at <= early[1]


def test_an_explicit_renew_before_earlier_than_the_ari_window_still_wins() -> None:
    plan = plan_renewal(T0, T0 + days(90), renew_before="45d", ari_window=WINDOW,
                        rng=random.Random(2))
    assert (plan.at, plan.source) == (T0 + days(45), "renew-before")


def test_an_inverted_ari_window_is_ignored() -> None:
    plan = plan_renewal(T0, T0 + days(90), ari_window=(WINDOW[1], WINDOW[0]),
                        rng=random.Random(2))
    assert (plan.at, plan.source) == (T0 + days(60), "default")


def test_a_certificate_that_ends_before_it_starts_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as err:
        renewal_time(T0, T0)
    assert err.value.field == "not_after"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param("720h", Duration(D(hours=720)), id="hours"),
        pytest.param("30d", Duration(days(30)), id="days"),
        pytest.param("90m", Duration(D(minutes=90)), id="minutes"),
        pytest.param("1h30m", Duration(D(minutes=90)), id="hours and minutes"),
        pytest.param("1.5h", Duration(D(minutes=90)), id="decimal hours"),
        pytest.param(" 30D ", Duration(days(30)), id="case and spaces are forgiven"),
        pytest.param("0.5", Fraction(0.5), id="a bare fraction"),
        pytest.param(".25", Fraction(0.25), id="a fraction without a leading zero"),
        pytest.param("50%", Fraction(0.5), id="a percentage"),
        pytest.param("12.5%", Fraction(0.125), id="a decimal percentage"),
    ],
)
def test_parse_renew_before_accepts(text: str, parsed: Duration | Fraction) -> None:
    assert parse_renew_before(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("30", id="a bare number of 1 or more, probably a missing unit"),
        pytest.param("1", id="a fraction of one would renew at issuance"),
        pytest.param("0", id="a fraction of zero would never renew"),
        pytest.param("0d", id="a zero duration"),
        pytest.param("100%", id="a hundred percent"),
        pytest.param("0%", id="zero percent"),
        pytest.param("-5d", id="a negative duration"),
        pytest.param("30 days", id="an English unit"),
        pytest.param("30w", id="an unknown unit"),
        pytest.param("abc%", id="a percentage without a number"),
        pytest.param("1" * 100 + "d", id="an absurdly long value"),
        pytest.param("9" * 63 + "d", id="too long for a timedelta (was an OverflowError)"),
        pytest.param("3651d", id="over ten years"),
    ],
)
def test_parse_renew_before_rejects_with_the_field_named(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_renew_before(text)
    assert err.value.field == "renew_before"


def test_parse_renew_before_rejects_a_non_string() -> None:
    with pytest.raises(InvalidInput):
        parse_renew_before(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "due"),
    [
        pytest.param(T0 - D(seconds=1), False, id="a second before the renewal time is not due"),
        pytest.param(T0, True, id="at the renewal time it is due"),
        pytest.param(T0 + days(3), True, id="after the renewal time it is due"),
    ],
)
def test_is_due(now: dt.datetime, due: bool) -> None:
    assert is_due(now, T0) is due
