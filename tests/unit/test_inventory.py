"""The inventory query: filters, durations, stable cursor paging (pure, no Vault)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from certlocker.errors import InvalidInput
from certlocker.lifecycle.policy.inventory import Query, page, parse_duration, parse_query
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, State)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class View:
    spec: CertificateSpec
    status: CertificateStatus


def view(env: str, service: str, name: str, *, state: State = State.VALID,
         issuer: str = "pebble", expires_in_days: float | None = 60) -> View:
    ref = CertificateRef(env, service, name)
    current = None
    if expires_in_days is not None:
        current = CertificateInfo(serial="01", not_before=NOW - dt.timedelta(days=30),
                                  not_after=NOW + dt.timedelta(days=expires_in_days),
                                  sha256_fingerprint="00" * 32, issuer="CN=test")
    return View(CertificateSpec(ref, (f"{name}.example.test",), issuer),
                CertificateStatus(state=state, current=current))


INVENTORY = [
    view("prod", "api", "www", expires_in_days=10),
    view("prod", "api", "admin", state=State.FAILED, expires_in_days=None),
    view("prod", "web", "shop", issuer="internal", expires_in_days=40),
    view("dev", "api", "www", expires_in_days=1),
    view("dev", "api-v2", "www", state=State.PENDING, expires_in_days=None),
    view("prod", "api", "old", expires_in_days=-3),
]
BY_REF = {v.spec.ref: v for v in INVENTORY}


def load_all(refs: list[CertificateRef]) -> list[View | None]:
    return [BY_REF[ref] for ref in refs]


def run(query: Query, removed: frozenset[CertificateRef] = frozenset()) -> list[str]:
    def load(refs: list[CertificateRef]) -> list[View | None]:
        return [None if ref in removed else BY_REF[ref] for ref in refs]

    return [v.spec.ref.id for v in page(list(BY_REF), load, query, NOW, chunk=2).items]


@pytest.mark.parametrize("args, expected", [
    ({}, ["dev.api.www", "dev.api-v2.www", "prod.api.admin", "prod.api.old", "prod.api.www",
          "prod.web.shop"]),
    ({"environment": "dev"}, ["dev.api.www", "dev.api-v2.www"]),
    ({"service": "api"}, ["dev.api.www", "prod.api.admin", "prod.api.old", "prod.api.www"]),
    ({"status": "failed"}, ["prod.api.admin"]),
    ({"issuer": "internal"}, ["prod.web.shop"]),
    ({"expiring_within": "720h"}, ["dev.api.www", "prod.api.old", "prod.api.www"]),
    ({"expiring_within": "2d"}, ["dev.api.www", "prod.api.old"]),
    # Past not_after is expired, whatever state was stored (prod.api.old is stored valid).
    ({"expiring_within": "30d", "environment": "prod", "status": "valid"},
     ["prod.api.www"]),
    ({"status": "expired"}, ["prod.api.old"]),
])
def test_filters_select_exactly_the_matching_certificates(args, expected) -> None:
    assert run(parse_query(args)) == expected


def test_certificates_without_a_current_certificate_are_not_expiring() -> None:
    assert "prod.api.admin" not in run(parse_query({"expiring_within": "3650d"}))


def test_cursor_pages_cover_everything_once_in_order() -> None:
    seen, cursor = [], None
    for _ in range(10):
        args = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        result = page(list(BY_REF), load_all, parse_query(args), NOW)
        seen += [v.spec.ref.id for v in result.items]
        cursor = result.next_cursor
        if cursor is None:
            break
    assert seen == run(parse_query({}))


def test_a_cursor_stays_put_when_earlier_certificates_disappear() -> None:
    first = page(list(BY_REF), load_all, parse_query({"limit": "2"}), NOW)
    assert first.next_cursor == "dev.api-v2.www"
    gone = frozenset({CertificateRef("dev", "api", "www")})
    assert run(parse_query({"limit": "2", "cursor": first.next_cursor}), gone) == [
        "prod.api.admin", "prod.api.old"]


def test_offset_still_works_and_last_page_has_no_cursor() -> None:
    result = page(list(BY_REF), load_all, parse_query({"offset": "5"}), NOW)
    assert [v.spec.ref.id for v in result.items] == ["prod.web.shop"]
    assert result.next_cursor is None


@pytest.mark.parametrize("raw, seconds", [
    ("720h", 720 * 3600), ("30d", 30 * 86400), ("1d12h", 36 * 3600), ("90m", 5400),
    ("2w", 14 * 86400), ("3600s", 3600),
])
def test_durations(raw: str, seconds: int) -> None:
    assert parse_duration("expiring_within", raw) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("args, field", [
    ({"environment": "../prod"}, "environment"),
    ({"environment": "Prod"}, "environment"),
    ({"service": "a/b"}, "service"),
    ({"status": "expired-ish"}, "status"),
    ({"issuer": "bad issuer"}, "issuer"),
    ({"expiring_within": "30"}, "expiring_within"),
    ({"expiring_within": "30x"}, "expiring_within"),
    ({"expiring_within": "h30"}, "expiring_within"),
    ({"expiring_within": "0d"}, "expiring_within"),
    ({"expiring_within": "-1d"}, "expiring_within"),
    ({"expiring_within": "99999w"}, "expiring_within"),
    # issue #14: too large for a timedelta (was an OverflowError, a 500)
    ({"expiring_within": "55m86584d5705060s07m998981240w6m"}, "expiring_within"),
    ({"expiring_within": "999999999w" * 40}, "expiring_within"),
    ({"expiring_within": ""}, "expiring_within"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "١٠"}, "limit"),  # Arabic-Indic digits pass str.isdigit
    ({"offset": "-1"}, "offset"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "a.b.c.d"}, "cursor"),
    ({"cursor": "dev.api.www", "offset": "1"}, "cursor"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_parameters_are_named(args, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_query(args)
    assert caught.value.field == field


def test_failed_selects_certificates_whose_renewal_is_failing() -> None:
    """A renewal that keeps failing leaves the stored state valid (the current certificate
    is still served); ``?status=failed`` must list it, expired or not."""
    failing = dataclasses.replace(BY_REF[CertificateRef("prod", "api", "www")], status=(
        CertificateStatus(state=State.VALID, last_error="CA unreachable", attempts=3,
                          current=BY_REF[CertificateRef("prod", "api", "www")].status.current)))
    expired = dataclasses.replace(BY_REF[CertificateRef("prod", "api", "old")], status=(
        BY_REF[CertificateRef("prod", "api", "old")].status.replace(last_error="CA down")))
    views = {v.spec.ref: v for v in (failing, expired)}
    found = page(list(views), lambda refs: [views[r] for r in refs],
                 parse_query({"status": "failed"}), NOW)
    assert [v.spec.ref.id for v in found.items] == ["prod.api.old", "prod.api.www"]
    shown_expired = page(list(views), lambda refs: [views[r] for r in refs],
                         parse_query({"status": "expired"}), NOW)
    assert [v.spec.ref.id for v in shown_expired.items] == ["prod.api.old"]
