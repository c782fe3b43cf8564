"""Maintenance windows for rotation (issue 19): the spec field through the one parser,
the window arithmetic, the hold and its override near expiry, the reissue decision, the
due hint at the window's start, and the reason shown to operators."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from certlocker import maintenance, specs
from certlocker.errors import InvalidInput
from certlocker.lifecycle.policy import explain, planning, reissue
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, RenewalRequest, State)
from tests.support.memory_issuer import MemoryIssuer
from tests.unit.test_reconciler import World

D = dt.timedelta
UTC = dt.timezone.utc
WEEKEND = {"days": ["sat", "sun"], "start": "02:00", "end": "05:00", "timezone": "UTC"}
# 2030-01-02 is a Wednesday; 2030-01-05 a Saturday
WED = dt.datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
SAT_2AM = dt.datetime(2030, 1, 5, 2, 0, tzinfo=UTC)
REF = CertificateRef("dev", "svc", "c1")


def window(**overrides: Any) -> maintenance.MaintenanceWindow:
    parsed = maintenance.parse("maintenance_window", {**WEEKEND, **overrides})
    assert parsed is not None
    return parsed


def declare(**fields: Any) -> CertificateSpec:
    return specs.parse({"environment": "dev", "service": "svc", "name": "c1",
                        "dns_names": ["c1.test"], "issuer": "test", **fields},
                       specs.PERMISSIVE)


# -- the one parser --------------------------------------------------------------------

def test_the_spec_parser_reads_a_window_and_it_round_trips() -> None:
    spec = declare(maintenance_window=WEEKEND)
    assert spec.maintenance_window == maintenance.MaintenanceWindow(
        ("sat", "sun"), dt.time(2), dt.time(5), "UTC")
    assert CertificateSpec.from_json(spec.to_json()) == spec
    assert spec.to_json()["maintenance_window"] == WEEKEND
    assert declare().maintenance_window is None and "maintenance_window" not in \
        declare().to_json()


def test_days_and_timezone_have_defaults() -> None:
    parsed = maintenance.parse("w", {"start": "22:00", "end": "01:00"})
    assert parsed == maintenance.MaintenanceWindow(maintenance.DAYS, dt.time(22),
                                                   dt.time(1), "UTC")


@pytest.mark.parametrize("value, field", [
    pytest.param("sat 02:00-05:00", "maintenance_window", id="not an object"),
    pytest.param({**WEEKEND, "weeks": 1}, "maintenance_window/weeks", id="an unknown field"),
    pytest.param({**WEEKEND, "days": ["sat", "sunday"]}, "maintenance_window/days/1",
                 id="a day that is not mon..sun"),
    pytest.param({**WEEKEND, "days": ["Sat"]}, "maintenance_window/days/0",
                 id="days are lower case, as the schema says"),
    pytest.param({**WEEKEND, "days": ["sat", "sat"]}, "maintenance_window/days/1",
                 id="a day named twice"),
    pytest.param({**WEEKEND, "days": []}, "maintenance_window/days", id="no day"),
    pytest.param({**WEEKEND, "start": "2:00"}, "maintenance_window/start",
                 id="a time that is not HH:MM"),
    pytest.param({**WEEKEND, "end": "24:00"}, "maintenance_window/end", id="hour 24"),
    pytest.param({**WEEKEND, "end": "02:00"}, "maintenance_window/end",
                 id="an empty span"),
    pytest.param({**WEEKEND, "timezone": "Mars/Olympus"}, "maintenance_window/timezone",
                 id="an unknown zone"),
    pytest.param({**WEEKEND, "timezone": "../../etc/passwd"},
                 "maintenance_window/timezone", id="a path for a zone"),
    pytest.param({**WEEKEND, "timezone": 5}, "maintenance_window/timezone",
                 id="a zone that is not a string"),
])
def test_a_bad_window_is_refused_naming_the_member(value: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        declare(maintenance_window=value)
    assert caught.value.field == field


def test_a_record_written_with_the_vault_cli_is_held_to_the_same_rules() -> None:
    stored = specs.from_record({"dns_names": ["c1.test"], "issuer": "test",
                                "maintenance_window": {**WEEKEND, "days": ["funday"]}},
                               REF, specs.PERMISSIVE)
    assert stored.problem is not None and "maintenance_window/days/0" in stored.problem


def test_a_patch_merges_into_the_window() -> None:
    record = declare(maintenance_window=WEEKEND).to_json()
    patched = specs.patched(record, {"maintenance_window": {"end": "06:00"}}, REF,
                            specs.PERMISSIVE)
    assert patched.maintenance_window == window(end="06:00")
    cleared = specs.patched(record, {"maintenance_window": None}, REF, specs.PERMISSIVE)
    assert cleared.maintenance_window is None


def test_the_openapi_schema_renders_the_same_rules() -> None:
    schema = specs.declaration_schema(specs.PERMISSIVE)["properties"]["maintenance_window"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["days"]["items"]["enum"] == list(maintenance.DAYS)
    assert set(schema["properties"]) == set(maintenance.FIELDS)


# -- the arithmetic ----------------------------------------------------------------------

@pytest.mark.parametrize("at, inside", [
    (SAT_2AM, True), (SAT_2AM - D(seconds=1), False), (SAT_2AM + D(hours=3), False),
    (SAT_2AM + D(days=1, hours=2, minutes=59), True), (WED, False),
])
def test_contains_includes_the_start_and_not_the_end(at: dt.datetime, inside: bool) -> None:
    assert window().contains(at) is inside


def test_next_start_is_the_next_opening_after_now() -> None:
    assert window().next_start(WED) == SAT_2AM
    assert window().next_start(SAT_2AM) == SAT_2AM + D(days=1)  # the sunday one
    assert window().next_start(SAT_2AM + D(days=1, hours=4)) == SAT_2AM + D(days=7)


def test_a_span_past_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = window(days=["fri"], start="22:00", end="02:00")
    fri_22 = dt.datetime(2030, 1, 4, 22, 0, tzinfo=UTC)
    assert friday_night.contains(fri_22 + D(hours=3, minutes=59))  # saturday 01:59
    assert not friday_night.contains(fri_22 + D(hours=4))
    assert not friday_night.contains(fri_22 - D(days=1))  # thursday night is not in it
    assert friday_night.next_start(WED) == fri_22


def test_local_times_follow_the_zones_daylight_saving() -> None:
    """Sunday 02:00-05:00 in Berlin is 01:00 UTC in January and 00:00 UTC in July."""
    berlin = window(days=["sun"], timezone="Europe/Berlin")
    assert berlin.next_start(WED) == dt.datetime(2030, 1, 6, 1, 0, tzinfo=UTC)
    july = dt.datetime(2030, 7, 3, 12, 0, tzinfo=UTC)
    assert berlin.next_start(july) == dt.datetime(2030, 7, 7, 0, 0, tzinfo=UTC)


# -- the hold and its override -----------------------------------------------------------

def cert(days: float, not_before: dt.datetime) -> CertificateInfo:
    return CertificateInfo(serial="1", not_before=not_before,
                           not_after=not_before + D(days=days), sha256_fingerprint="ab",
                           issuer="CN=x", dns_names=("c1.test",), issuer_name="test")


@pytest.mark.parametrize("days, now, w, wait", [
    pytest.param(90, WED, window(), True,
                 id="a 90-day cert due on wednesday waits for saturday 02:00 (26 d left)"),
    pytest.param(90, WED + D(days=20), window(), False,
                 id="a 90-day cert still failing 20 days later is issued at once "
                    "(6 d left at the window, under half of its 30-day slack)"),
    pytest.param(6, WED, window(days=list(maintenance.DAYS)), True,
                 id="a 6-day cert waits for a daily window (34 h left when it opens)"),
    pytest.param(6, WED, window(), False,
                 id="a 6-day cert never waits for a weekly one"),
    pytest.param(90, WED + D(days=31), window(), False,
                 id="an expired cert is issued at once"),
    pytest.param(90, SAT_2AM + D(hours=1), window(), False, id="inside the window"),
])
def test_hold(days: int, now: dt.datetime, w: maintenance.MaintenanceWindow,
              wait: bool) -> None:
    """Each certificate became due (one third of its life left) at ``WED``."""
    current = cert(days, WED - D(days=days) * 2 / 3)
    renewal_at = current.not_after - D(days=days) / 3
    assert renewal_at == WED
    assert maintenance.hold(w, now, current.not_after, renewal_at).wait is wait


def test_no_window_or_no_certificate_is_never_held() -> None:
    assert not maintenance.hold(None, WED, WED + D(days=1), WED).wait
    assert not maintenance.hold(window(), WED, None, None).wait


# -- the decision, the hint, the reason shown ------------------------------------------------

def due_90_day(spec: CertificateSpec) -> CertificateStatus:
    return CertificateStatus(State.VALID, current=cert(90, WED - D(days=60)))


def test_a_due_renewal_outside_the_window_is_held_and_filed_at_its_start() -> None:
    spec = declare(maintenance_window=WEEKEND)
    status = due_90_day(spec)
    decision = planning.decide(spec, status, WED)
    assert decision == reissue.Decision(False, reissue.OUTSIDE_MAINTENANCE_WINDOW,
                                        trigger=reissue.RENEWAL_DUE)
    assert "2030-01-05 02:00" in decision.message
    assert planning.next_action_at(spec, status, WED) == SAT_2AM
    shown = explain.next_renewal(spec, status, WED)
    assert (shown.at, shown.reason) == (SAT_2AM, "outside-maintenance-window")
    assert planning.decide(spec, status, SAT_2AM).needed
    assert planning.decide(declare(), status, WED).needed  # no window: at once


def test_an_operators_renewal_is_held_too_but_a_first_issuance_never() -> None:
    spec = declare(maintenance_window=WEEKEND)
    fresh = CertificateStatus(State.VALID, current=cert(90, WED),
                              renewal_request=RenewalRequest(WED, "alice"))
    decision = planning.decide(spec, fresh, WED)
    assert (decision.reason, decision.trigger) == (reissue.OUTSIDE_MAINTENANCE_WINDOW,
                                                   reissue.RENEWAL_REQUESTED)
    assert planning.decide(spec, None, WED) == reissue.Decision(True, reissue.MISSING)


def test_the_override_is_said_when_expiry_is_too_close_to_wait() -> None:
    spec = declare(maintenance_window=WEEKEND)
    status = due_90_day(spec)
    late = WED + D(days=24)  # the next window would leave 5.5 days of the 30-day slack
    decision = planning.decide(spec, status, late)
    assert decision.needed and decision.reason == reissue.RENEWAL_DUE
    assert decision.override and "would leave only" in decision.override
    assert "would leave only" in explain.next_renewal(spec, status, late).why


def test_through_the_reconciler_a_held_renewal_is_issued_when_the_window_opens() -> None:
    start = WED - D(days=60)
    w = World(issuer=MemoryIssuer(not_before=start))
    w.clock.advance(start - w.clock.now())
    try:
        spec = declare(maintenance_window=WEEKEND)
        w.declare_in_vault(spec)
        w.reconciler.run_once()
        first = w.status(1).current
        assert first is not None and first.not_after == WED + D(days=30)
        w.clock.advance(WED - w.clock.now())
        w.reconciler.tick()
        assert w.status(1).current == first  # due, but held for saturday
        assert any("/20300105/0200/" in h for h in w.hints())
        w.clock.advance(SAT_2AM - w.clock.now())
        w.reconciler.tick()
        renewed = w.status(1).current
        assert renewed is not None and renewed.sha256_fingerprint != first.sha256_fingerprint
    finally:
        w.close()


# -- windows per service or team: the administrator's document ---------------------------

NIGHTLY = {"start": "01:00", "end": "03:00"}


def test_the_most_specific_key_wins() -> None:
    defaults = maintenance.parse_defaults({"windows": {
        "prod/*": WEEKEND, "prod/payments-*": NIGHTLY, "prod/payments-api": {
            **NIGHTLY, "days": ["mon"]}}})
    assert defaults.for_service("prod", "payments-api") == window(days=["mon"], **NIGHTLY)
    assert defaults.for_service("prod", "payments-web") == maintenance.parse("w", NIGHTLY)
    assert defaults.for_service("prod", "search") == window()
    assert defaults.for_service("dev", "payments-api") is None


@pytest.mark.parametrize("doc, field", [
    ({"windows": {"prod": WEEKEND}}, "windows/prod"),
    ({"windows": {"prod/a*b": WEEKEND}}, "windows/prod~1a*b"),
    ({"windows": {"prod/api": {**WEEKEND, "end": "x"}}}, "windows/prod~1api/end"),
    ({"windows": [], "other": 1}, ""),
])
def test_a_bad_document_names_the_key(doc: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        maintenance.parse_defaults(doc)
    assert caught.value.field == field


def test_the_stored_document_applies_to_specs_without_their_own_window() -> None:
    from certlocker.lifecycle.maintenance_defaults import WindowDefaults
    from tests.support.memory_store import MemoryStore
    store = MemoryStore()
    clock = [0.0]
    defaults = WindowDefaults(store, refresh=30, monotonic=lambda: clock[0])
    bare, own = declare(), declare(maintenance_window=NIGHTLY)
    assert defaults.apply(bare).window is None  # no document yet
    store.write_json(store.paths.maintenance_windows(), {"windows": {"dev/svc": WEEKEND}},
                     cas=None)
    assert defaults.apply(bare).window is None  # read again only after the refresh
    clock[0] = 31
    inherited = defaults.apply(bare)
    assert inherited.window == window() and inherited.maintenance_window is None
    assert inherited == bare and "maintenance_window" not in inherited.to_json()
    assert defaults.apply(own).window == maintenance.parse("w", NIGHTLY)  # its own wins
    status = due_90_day(inherited)
    assert planning.decide(inherited, status, WED).reason == \
        reissue.OUTSIDE_MAINTENANCE_WINDOW
    store.write_json(store.paths.maintenance_windows(), {"windows": {"dev": WEEKEND}},
                     cas=None)
    clock[0] = 62
    assert defaults.apply(bare).window is None  # a broken document holds nothing back
