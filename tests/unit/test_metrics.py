"""metrics.summary and metrics.collector without a server: rows from records, the cache's
refresh rule, and the exposition parsed back by prometheus_client's own parser."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from prometheus_client.parser import text_string_to_metric_families

from certlocker.metrics.collector import InventoryCollector, IssuanceMetrics, exposition
from certlocker.metrics.summary import SummaryCache, ready_condition, row
from certlocker.vault.token_keeper import TokenLife
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, State, TargetStatus)

NOW = dt.datetime(2030, 1, 10, tzinfo=dt.timezone.utc)
REF = CertificateRef("prod", "web", "www")
SPEC = CertificateSpec(REF, ("www.example",), "pebble")
INFO = CertificateInfo("1a", NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=60),
                       "aa" * 32, "CN=ca")


def samples(text: str, name: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name]


def test_ready_follows_the_stored_certificate():
    assert ready_condition(CertificateStatus(State.VALID, current=INFO), NOW) == "True"
    assert ready_condition(CertificateStatus(State.PENDING), NOW) == "Unknown"
    assert ready_condition(CertificateStatus(State.FAILED), NOW) == "False"
    expired = dict(not_after=NOW - dt.timedelta(seconds=1))
    assert ready_condition(CertificateStatus(State.VALID, current=dataclasses.replace(
        INFO, **expired)), NOW) == "False"


def test_the_exposition_carries_expiry_renewal_ready_and_target_states():
    status = CertificateStatus(State.VALID, current=INFO, targets=(
        TargetStatus("10.0.0.1:443", "ok", "aa" * 32, NOW),
        TargetStatus("10.0.0.2:443", "stale", "bb" * 32, NOW)))
    cache = SummaryCache(lambda: [row(SPEC, status, NOW)], max_age=60)
    text = exposition(InventoryCollector(cache)).decode()
    [expiry] = samples(text, "certlocker_certificate_expiration_timestamp_seconds")
    assert expiry.value == INFO.not_after.timestamp()
    assert expiry.labels == {"id": "prod.web.www", "environment": "prod", "service": "web",
                             "certificate": "www", "name": "prod.web.www",
                             "issuer": "pebble"}
    [renewal] = samples(text, "certlocker_certificate_renewal_timestamp_seconds")
    assert renewal.value == (INFO.not_after - dt.timedelta(days=30)).timestamp()
    ready = {s.labels["condition"]: s.value
             for s in samples(text, "certlocker_certificate_ready_status")}
    assert ready == {"True": 1.0, "False": 0.0, "Unknown": 0.0}
    states = {s.labels["address"]: s.labels["state"]
              for s in samples(text, "certlocker_target_verification_state")}
    assert states == {"10.0.0.1:443": "ok", "10.0.0.2:443": "stale"}


def test_states_are_true_now_not_as_stored():
    """Past not_after the certificate counts as expired, a failing renewal shows, and a
    node result judged against the previous certificate is never exported as ok."""
    renewed = dataclasses.replace(INFO, sha256_fingerprint="cc" * 32,
                                  not_before=NOW - dt.timedelta(minutes=1))
    old_ok = TargetStatus("10.0.0.1:443", "ok", "aa" * 32, NOW - dt.timedelta(minutes=5))
    rows = [row(SPEC, CertificateStatus(State.VALID, current=renewed, targets=(old_ok,)), NOW),
            row(dataclasses.replace(SPEC, ref=CertificateRef("prod", "web", "old")),
                CertificateStatus(State.VALID, current=dataclasses.replace(
                    INFO, not_after=NOW - dt.timedelta(hours=1)), last_error="CA down",
                    attempts=4), NOW)]
    text = exposition(InventoryCollector(SummaryCache(lambda: rows, max_age=60))).decode()
    [node] = samples(text, "certlocker_target_verification_state")
    assert node.labels["state"] == "unverified"
    counts = {s.labels["state"]: s.value for s in samples(text, "certlocker_certificates")}
    assert counts == {"valid": 1.0, "expired": 1.0}
    failing = {s.labels["name"]: s.value
               for s in samples(text, "certlocker_certificate_renewal_failing")}
    assert failing == {"prod.web.www": 0.0, "prod.web.old": 1.0}


def test_issuance_outcomes_are_counted():
    cache = SummaryCache(lambda: [], max_age=60)
    before = exposition(InventoryCollector(cache)).decode()

    def count(text: str, outcome: str) -> float:
        return sum(s.value for s in samples(text, "certlocker_issuance_duration_seconds_count")
                   if s.labels["outcome"] == outcome)

    def failures(text: str) -> float:
        return sum(s.value for s in samples(text, "certlocker_renewal_failures_total")
                   if s.labels.get("id") == "prod.web.www")

    IssuanceMetrics().issuance_finished(REF, 1.5, ok=True)
    IssuanceMetrics().issuance_finished(REF, 0.5, ok=False)
    after = exposition(InventoryCollector(cache)).decode()
    assert count(after, "success") == count(before, "success") + 1
    assert count(after, "failure") == count(before, "failure") + 1
    assert failures(after) == failures(before) + 1


def test_the_summary_is_rebuilt_only_when_older_than_max_age():
    clock = [0.0]
    loads: list[int] = []
    done = threading.Event()

    def loader():
        loads.append(1)
        done.set()
        return []

    cache = SummaryCache(loader, max_age=60, monotonic=lambda: clock[0])
    assert cache.value() == []  # the first scrape waits for the first build
    for _ in range(5):
        cache.value()
    assert len(loads) == 1
    clock[0] = 61.0
    done.clear()
    cache.value()  # too old to serve: this scrape waits for the rebuild
    assert done.is_set()
    assert len(loads) == 2


def test_a_rare_scrape_never_gets_a_summary_older_than_the_refresh_interval():
    """The reported case: refresh every 10 s, the worker next scraped 296 s later. It
    must answer with a summary built after the scrape asked, not the 296-second-old one;
    and a rebuild that fails leaves no stale gauges, only the age of the last summary."""
    clock = [0.0]
    fail = [False]

    def loader():
        if fail[0]:
            from certlocker.errors import VaultUnavailable
            raise VaultUnavailable("sealed")
        return [dataclasses.replace(row(SPEC, CertificateStatus(State.VALID, current=INFO),
                                        NOW), issuer=f"built-at-{clock[0]:g}")]

    cache = SummaryCache(loader, max_age=10, first_wait=5, monotonic=lambda: clock[0])
    collector = InventoryCollector(cache)
    assert [r.issuer for r in cache.value()] == ["built-at-0"]
    clock[0] = 296.0
    text = exposition(collector).decode()
    [expiry] = samples(text, "certlocker_certificate_expiration_timestamp_seconds")
    assert expiry.labels["issuer"] == "built-at-296"
    [age] = samples(text, "certlocker_inventory_summary_age_seconds")
    assert age.value <= 10

    fail[0] = True
    clock[0] = 600.0
    text = exposition(collector).decode()
    assert samples(text, "certlocker_certificate_expiration_timestamp_seconds") == []
    [age] = samples(text, "certlocker_inventory_summary_age_seconds")
    assert age.value == 600 - 296


def test_the_expiry_of_certlocker_token_is_exported_unless_it_never_expires():
    life = TokenLife(ttl=3600, full=86400, renewable=True)
    token = SummaryCache(lambda: life.expires_at(NOW), max_age=60)
    text = exposition(InventoryCollector(SummaryCache(lambda: [], max_age=60), token)).decode()
    [expiry] = samples(text, "certlocker_vault_token_expiry_timestamp_seconds")
    assert expiry.value == NOW.timestamp() + 3600
    forever = SummaryCache(lambda: TokenLife(0, 0, False).expires_at(NOW), max_age=60)
    text = exposition(InventoryCollector(SummaryCache(lambda: [], max_age=60), forever)).decode()
    assert not samples(text, "certlocker_vault_token_expiry_timestamp_seconds")


def test_every_certificate_has_its_own_name_label():
    """cert-manager's mixin groups by ``name``: six prod certificates called ``www`` in
    six services must stay six series, not collapse into {prod, www}."""
    status = CertificateStatus(State.VALID, current=INFO)
    rows = [row(CertificateSpec(CertificateRef("prod", f"svc{i}", "www"), ("w.example",),
                                "pebble"), status, NOW) for i in range(6)]
    text = exposition(InventoryCollector(SummaryCache(lambda: rows, max_age=60))).decode()
    names = [s.labels["name"] for s in
             samples(text, "certlocker_certificate_expiration_timestamp_seconds")]
    assert sorted(names) == [f"prod.svc{i}.www" for i in range(6)]
    ready_false = {(s.labels["name"], s.labels["condition"]) for s in
                   samples(text, "certlocker_certificate_ready_status")}
    assert len(ready_false) == 6 * 3
