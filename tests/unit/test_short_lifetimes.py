"""Short lifetimes (issue 19): retries that fit in the slack a certificate has left, and an
alert while a human still has 48 hours, for 6-day, 47-day and 90-day certificates."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from certlocker.errors import IssuanceFailed
from certlocker.lifecycle.policy import alerts, planning, renewal
from certlocker.lifecycle.policy.backoff import DEFAULT_POLICY, cap, next_attempt
from certlocker.models import CertificateInfo, CertificateStatus, State
from tests.unit.test_reconciler import T0, World, spec
from tests.support.memory_issuer import MemoryIssuer

D = dt.timedelta


class Longest(random.Random):
    """The worst case for a deadline: every jittered wait is the longest allowed."""

    def uniform(self, a: float, b: float) -> float:
        return b


def cert(days: float, not_before: dt.datetime = T0) -> CertificateInfo:
    return CertificateInfo(serial="1", not_before=not_before,
                           not_after=not_before + D(days=days), sha256_fingerprint="ab",
                           issuer="CN=x", dns_names=("c1.test",))


def failures_until_expiry(days: int) -> list[tuple[dt.timedelta, dt.timedelta, dt.datetime]]:
    """(validity left, wait, next attempt) for consecutive failures from the default
    renewal time until a minute before expiry, every wait the longest allowed."""
    current = cert(days)
    lifetime = current.not_after - current.not_before
    at = renewal.renewal_time(current.not_before, current.not_after)
    out = []
    attempts = 0
    while current.not_after - at > D(minutes=1):
        attempts += 1
        nxt = next_attempt(attempts, at, lifetime, Longest(), not_after=current.not_after)
        out.append((current.not_after - at, nxt - at, nxt))
        at = nxt
    return out


@pytest.mark.parametrize("days, slack, longest_wait, first_day_attempts", [
    pytest.param(6, D(hours=48), D(hours=7, minutes=12), 9,
                 id="a 6-day cert renews at day 4 and waits at most 7.2 h (a 20th of its "
                    "life)"),
    pytest.param(47, D(days=15, hours=16), D(hours=12), 9,
                 id="a 47-day cert renews with 15 d 16 h left and waits at most 12 h"),
    pytest.param(90, D(days=30), D(hours=12), 9,
                 id="a 90-day cert renews with 30 days left and waits at most 12 h"),
])
def test_retries_fit_in_the_slack_left(days: int, slack: dt.timedelta,
                                       longest_wait: dt.timedelta,
                                       first_day_attempts: int) -> None:
    schedule = failures_until_expiry(days)
    not_after = T0 + D(days=days)
    assert schedule[0][0] == slack  # the first attempt is at the renewal time
    assert all(at < not_after for _, _, at in schedule), "a retry planned past expiry"
    assert all(wait <= left * DEFAULT_POLICY.remaining_fraction for left, wait, _ in schedule)
    assert max(wait for _, wait, _ in schedule) == longest_wait
    assert sum(1 for left, _, _ in schedule if left > slack - D(hours=24)) == first_day_attempts


def test_a_6_day_cert_retries_more_often_as_expiry_nears() -> None:
    """Without the cap on the time left, a 6-day certificate failing with 5 hours left
    would wait 7.2 hours: its next attempt after it expired."""
    lifetime = D(days=6)
    for left, longest in ((D(hours=24), D(hours=6)), (D(hours=5), D(hours=1, minutes=15)),
                          (D(hours=1), D(minutes=15))):
        assert cap(lifetime, remaining=left) == longest
        now = T0 + lifetime - left
        nxt = next_attempt(30, now, lifetime, Longest(), not_after=T0 + lifetime)
        assert nxt - now == longest and nxt < T0 + lifetime
    assert cap(lifetime) == D(hours=7, minutes=12)  # no deadline given: the lifetime cap


def test_an_expired_certificate_is_retried_on_the_lifetime_cap() -> None:
    now = T0 + D(days=7)
    nxt = next_attempt(30, now, D(days=6), Longest(), not_after=T0 + D(days=6))
    assert nxt - now == D(hours=7, minutes=12)


def test_a_ca_retry_after_still_wins_past_expiry() -> None:
    """The CA refuses earlier attempts anyway; the alert tells a human instead."""
    now = T0 + D(days=5, hours=23)
    nxt = next_attempt(1, now, D(days=6), random.Random(1), retry_after=D(hours=3),
                       not_after=T0 + D(days=6))
    assert nxt == now + D(hours=3)


# -- the alert while 48 h are left -------------------------------------------------------

def failing(current: CertificateInfo, attempts: int = 1) -> CertificateStatus:
    return CertificateStatus(State.VALID, current=current, attempts=attempts,
                             last_error="the CA is down")


@pytest.mark.parametrize("days, left, status_of, expected", [
    pytest.param(6, D(hours=47, minutes=55), failing, alerts.EXPIRY_NEAR,
                 id="a 6-day cert whose renewal at day 4 failed once alerts with ~48 h left"),
    pytest.param(6, D(hours=47, minutes=55), lambda c: CertificateStatus(State.VALID, c),
                 None, id="a 6-day cert inside 48 h that is not failing does not alert"),
    pytest.param(6, D(hours=14), lambda c: CertificateStatus(State.VALID, c),
                 alerts.EXPIRY_NEAR,
                 id="the safety net still fires at a tenth of the lifetime whatever happened"),
    pytest.param(6, D(hours=49), failing, None,
                 id="a 6-day cert renewed early and failing with 49 h left waits"),
    pytest.param(47, D(days=5), failing, None,
                 id="a 47-day cert failing with 5 days left keeps retrying quietly"),
    pytest.param(47, D(days=4, hours=16), failing, alerts.EXPIRY_NEAR,
                 id="a 47-day cert failing inside a tenth of its life alerts"),
    pytest.param(90, D(days=8), failing, None,
                 id="a 90-day cert failing with 8 days left keeps retrying quietly"),
    pytest.param(90, D(days=7), failing, alerts.EXPIRY_NEAR,
                 id="a 90-day cert alerts at the 7-day floor"),
])
def test_expiry_alert_while_renewal_is_failing(days, left, status_of, expected) -> None:
    current = cert(days)
    assert alerts.evaluate(status_of(current), current.not_after - left) == expected


def test_the_failing_floor_never_shrinks_the_safety_net() -> None:
    policy = alerts.AlertPolicy(failing_floor=D(hours=1))
    assert alerts.failing_floor(cert(90), policy) == D(days=7)
    assert alerts.failing_floor(cert(6), alerts.DEFAULT_POLICY) == D(hours=48)


def test_the_due_hint_wakes_a_failing_cert_when_it_crosses_48h_left() -> None:
    """A 6-day cert renewed at 50% (72 h left) that keeps failing, its next attempt far
    off (a CA's Retry-After): the reconciler looks again at 48 h left, to alert."""
    current = cert(6)
    status = failing(current).replace(next_attempt_at=current.not_after - D(hours=30))
    now = current.not_after - D(hours=70)
    at = planning.next_action_at(spec(1, renew_before="50%"), status, now)
    assert at == current.not_after - D(hours=48)


def test_a_6_day_cert_failing_at_day_4_alerts_with_48h_left_and_never_retries_past_expiry():
    """Through the reconciler: a 6-day certificate, its CA down from day 4 on."""
    w = World(issuer=MemoryIssuer(not_before=T0, lifetime=D(days=6)))
    try:
        w.declare_in_vault(spec(1))
        w.reconciler.run_once()
        first = w.status(1).current
        assert first is not None and first.not_after == T0 + D(days=6)
        w.issuer.fail_with = IssuanceFailed("the CA is down")
        w.clock.advance(D(days=3, hours=23, minutes=59))
        w.reconciler.tick()
        assert w.status(1).attempts == 0  # not due before day 4
        w.clock.advance(D(minutes=1))
        w.reconciler.tick()
        status = w.status(1)
        assert status.attempts == 1 and status.current == first
        assert [a.kind for a in w.alerts.sent] == [alerts.EXPIRY_NEAR]
        assert first.not_after - w.alerts.sent[0].at == D(hours=48)
        planned = []
        while w.clock.now() < first.not_after - D(minutes=5):
            status = w.status(1)
            assert status.next_attempt_at is not None
            planned.append(status.next_attempt_at)
            w.clock.advance(status.next_attempt_at - w.clock.now())
            w.reconciler.tick()
        assert len(planned) > 10 and all(at < first.not_after for at in planned)
        # told once per kind, not on every failure: later, that retries are exhausted
        assert [a.kind for a in w.alerts.sent] == [alerts.EXPIRY_NEAR,
                                                   alerts.RETRIES_EXHAUSTED]
    finally:
        w.close()



def test_the_failing_floor_is_a_setting_validated_at_start() -> None:
    from certlocker import settings as settings_mod
    from certlocker.errors import ConfigurationError
    base = {"CERTLOCKER_VAULT_ADDR": "http://127.0.0.1:1", "CERTLOCKER_VAULT_TOKEN": "t"}
    loaded = settings_mod.load(environ={**base,
                                        "CERTLOCKER_ALERT_FAILING_FLOOR_SECONDS": "259200"})
    assert alerts.policy_from_settings(loaded).failing_floor == D(hours=72)
    assert alerts.policy_from_settings(settings_mod.load(environ=base)).failing_floor == \
        D(hours=48)
    with pytest.raises(ConfigurationError, match="alert_failing_floor_seconds"):
        settings_mod.load(environ={**base, "CERTLOCKER_ALERT_FAILING_FLOOR_SECONDS": "-1"})
