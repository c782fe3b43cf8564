"""lifecycle.verification: grouping, severity, divergence, and the orchestrator over an
in-memory store, an in-memory audit chain and a scripted probe (no network)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from certlocker.audit.chain import AuditLog
from certlocker.audit.memory import MemoryAuditStore
from certlocker.clock import FixedClock
from certlocker.errors import Conflict, NotFound
from certlocker.lifecycle.verification import (Verifier, audit_details, divergent, node_addresses,
                                               target_views, worst)
from certlocker.models import (CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, State, Target, TargetStatus)
from certlocker.paths import VaultPaths

NOW = dt.datetime(2030, 1, 10, 12, tzinfo=dt.timezone.utc)
REF = CertificateRef("prod", "web", "www")
POOL = Target("www.example:8443", sni=None, ips=("10.0.0.1", "10.0.0.2", "10.0.0.3"))
SINGLE = Target("10.0.1.1:443", sni="www.example")


def info(fp: str, issued: dt.datetime = NOW - dt.timedelta(days=1)) -> CertificateInfo:
    return CertificateInfo(serial=fp[:8], not_before=issued,
                           not_after=issued + dt.timedelta(days=90),
                           sha256_fingerprint=fp, issuer="CN=test")


class MemoryStore:
    """Specs and statuses with KV-style versions and check-and-set."""

    def __init__(self) -> None:
        self.paths = VaultPaths()
        self.specs: dict[CertificateRef, CertificateSpec] = {}
        self.statuses: dict[CertificateRef, tuple[dict[str, Any], int]] = {}

    def read_spec(self, ref: CertificateRef) -> tuple[CertificateSpec, int] | None:
        return (self.specs[ref], 1) if ref in self.specs else None

    def read_status(self, ref: CertificateRef) -> tuple[CertificateStatus, int] | None:
        if ref not in self.statuses:
            return None
        doc, version = self.statuses[ref]
        return CertificateStatus.from_json(json.loads(json.dumps(doc))), version

    def write_status(self, ref: CertificateRef, status: CertificateStatus, cas: int) -> int:
        version = self.statuses.get(ref, (None, 0))[1]
        if version != cas:
            raise Conflict("cas")
        self.statuses[ref] = (status.to_json(), version + 1)
        return version + 1

    def update_status(self, ref: CertificateRef, change: Any) -> CertificateStatus:
        found = self.read_status(ref)
        old, version = found if found else (None, 0)
        new = change(old)
        self.write_status(ref, new, version)
        return new


class ScriptedProbe:
    """Answers each node address with a scripted status; counts calls."""

    def __init__(self, answers: dict[str, str], on_call: Any = None) -> None:
        self.answers = answers
        self.calls = 0
        self.on_call = on_call

    def __call__(self, expected, history, targets, *, now, timeout, parallelism, anchors):
        self.calls += 1
        if self.on_call:
            self.on_call(self.calls)
        out = []
        for target in targets:
            for address in node_addresses(target):
                status = self.answers[address]
                served = expected.sha256_fingerprint if status == "ok" else "ee" * 32
                out.append(TargetStatus(address, status, served, now))
        return out


def scene(answers: dict[str, str], *, issued: dt.datetime = NOW - dt.timedelta(days=1),
          grace: dt.timedelta = dt.timedelta(hours=1), on_call: Any = None):
    store = MemoryStore()
    store.specs[REF] = CertificateSpec(REF, ("www.example",), "pebble", targets=(POOL, SINGLE))
    store.write_status(REF, CertificateStatus(State.VALID, current=info("aa" * 32, issued),
                                              history=("bb" * 32,)), cas=0)
    alerts: list[tuple[CertificateRef, list[TargetStatus]]] = []
    audit_store = MemoryAuditStore()
    probe = ScriptedProbe(answers, on_call)
    verifier = Verifier(store, store.update_status, probe=probe,
                        audit=AuditLog([audit_store], FixedClock(NOW)), clock=FixedClock(NOW),
                        grace=grace, on_divergence=lambda ref, bad, at: alerts.append((ref, bad)))
    return store, verifier, audit_store, alerts, probe


ALL_OK = {"10.0.0.1:8443": "ok", "10.0.0.2:8443": "ok", "10.0.0.3:8443": "ok",
          "10.0.1.1:443": "ok"}


def test_a_pool_is_as_bad_as_its_worst_node_and_keeps_every_node():
    nodes = [TargetStatus("10.0.0.1:8443", "ok", "aa", NOW),
             TargetStatus("10.0.0.2:8443", "stale", "bb", NOW)]
    [pool, single] = target_views([POOL, SINGLE], nodes)
    assert pool.status == "stale"
    assert [n.status for n in pool.nodes] == ["ok", "stale", "unknown"]
    assert pool.served_sha256 is None  # the nodes disagree
    assert single.status == "unknown" and single.checked_at is None
    assert pool.to_json()["nodes"][1]["address"] == "10.0.0.2:8443"


def test_severity_puts_expired_before_mismatch_before_stale_before_ok():
    assert worst(["ok", "stale", "mismatch"]) == "mismatch"
    assert worst(["ok", "expired", "unreachable"]) == "expired"
    assert worst(["ok", "chain-incomplete"]) == "chain-incomplete"
    assert worst(["ok", "ok"]) == "ok"
    assert worst([]) == "unknown"


def test_divergence_counts_only_after_the_grace_period_from_delivery():
    status = CertificateStatus(State.VALID, current=info("aa" * 32, NOW - dt.timedelta(minutes=30)),
                               targets=(TargetStatus("a:1", "stale"), TargetStatus("b:1", "ok")))
    assert divergent(status, NOW, dt.timedelta(hours=1)) == []
    assert [t.address for t in divergent(status, NOW, dt.timedelta(minutes=10))] == ["a:1"]
    assert divergent(CertificateStatus(State.PENDING), NOW, dt.timedelta(0)) == []


def test_audit_details_list_divergent_nodes_first_and_are_capped():
    results = [TargetStatus(f"10.0.0.{i}:443", "ok" if i % 2 else "stale", "cc" * 32, NOW)
               for i in range(100)]
    details = audit_details(info("aa" * 32), results)
    assert details["counts"] == {"ok": 50, "stale": 50}
    assert details["targets"][0]["status"] == "stale"
    assert len(details["targets"]) == 40 and details["truncated"] == 60


def test_verify_writes_each_node_audits_and_alerts_past_grace():
    answers = dict(ALL_OK, **{"10.0.0.2:8443": "stale", "10.0.1.1:443": "mismatch"})
    store, verifier, audit_store, alerts, _ = scene(answers)
    status = verifier.verify_certificate(REF, actor="token-alice")
    assert {t.address: t.status for t in status.targets} == answers
    assert store.read_status(REF)[0].targets == status.targets
    [event] = audit_store.events.values()
    assert (event.actor, event.action, event.subject, event.outcome) == (
        "token-alice", "delivery.verify", REF.id, "failure")
    assert event.reason == "1 mismatch, 1 stale"
    assert event.details["counts"] == {"mismatch": 1, "ok": 2, "stale": 1}
    [(ref, bad)] = alerts
    assert ref == REF and {t.address for t in bad} == {"10.0.0.2:8443", "10.0.1.1:443"}


def test_a_fresh_delivery_is_not_alerted_and_all_ok_is_a_success():
    _, verifier, audit_store, alerts, _ = scene(
        dict(ALL_OK, **{"10.0.0.1:8443": "stale"}), issued=NOW - dt.timedelta(minutes=5))
    verifier.verify_certificate(REF)
    assert alerts == []
    _, verifier, audit_store, alerts, _ = scene(ALL_OK)
    verifier.verify_certificate(REF)
    [event] = audit_store.events.values()
    assert event.outcome == "success" and event.reason is None and alerts == []


def test_a_look_only_when_delivered_records_nothing_until_every_node_serves_it():
    answers = dict(ALL_OK, **{"10.0.0.2:8443": "stale"})
    store, verifier, audit_store, alerts, probe = scene(answers)
    before = store.statuses[REF]
    shown = verifier.verify_certificate(REF, only_when_delivered=True)
    assert probe.calls == 1 and shown.targets == ()
    assert store.statuses[REF] == before and audit_store.events == {} and alerts == []
    answers["10.0.0.2:8443"] = "ok"
    done = verifier.verify_certificate(REF, only_when_delivered=True)
    assert {t.status for t in done.targets} == {"ok"}
    assert store.read_status(REF)[0].targets == done.targets  # type: ignore[index]
    [event] = audit_store.events.values()
    assert event.outcome == "success"


def test_a_certificate_replaced_during_the_probes_is_probed_again():
    holder: dict[str, Any] = {}

    def renew_during_first_probe(call: int) -> None:
        if call == 1:
            store = holder["store"]
            old, version = store.read_status(REF)
            store.write_status(REF, old.replace(current=info("dd" * 32)), cas=version)

    store, verifier, _, _, probe = scene(ALL_OK, on_call=renew_during_first_probe)
    holder["store"] = store
    status = verifier.verify_certificate(REF)
    assert probe.calls == 2
    assert status.current.sha256_fingerprint == "dd" * 32
    assert all(t.served_sha256 == "dd" * 32 for t in status.targets)


def test_nothing_issued_or_no_spec_is_refused():
    store, verifier, *_ = scene(ALL_OK)
    store.statuses[REF] = (CertificateStatus(State.PENDING).to_json(), 5)
    with pytest.raises(Conflict):
        verifier.verify_certificate(REF)
    with pytest.raises(NotFound):
        verifier.verify_certificate(CertificateRef("prod", "web", "other"))


def test_a_scheduled_pass_verifies_nodes_never_or_long_ago_checked():
    from certlocker.lifecycle.verification import verification_due

    hour = dt.timedelta(hours=1)
    status = CertificateStatus(State.VALID, current=info("aa" * 32), targets=tuple(
        TargetStatus(a, "ok", "aa" * 32, NOW - dt.timedelta(minutes=10))
        for t in (POOL, SINGLE) for a in node_addresses(t)))
    assert not verification_due((POOL, SINGLE), status, NOW, hour)
    assert verification_due((POOL, SINGLE), status, NOW + hour, hour)
    assert verification_due((POOL, Target("10.9.9.9:443")), status, NOW, hour)
    assert not verification_due((), status, NOW, hour)
    assert not verification_due((POOL,), CertificateStatus(State.PENDING), NOW, hour)


def test_after_a_renewal_every_node_is_due_at_once_and_never_shown_ok():
    """Results judged against the previous certificate are facts about it: a renewal makes
    the certificate due for verification now, and until then no node reads ok."""
    from certlocker.lifecycle.verification import (UNVERIFIED, next_verification_at,
                                                   outdated, verification_due)

    hour = dt.timedelta(hours=1)
    checked = NOW - dt.timedelta(minutes=2)
    old_results = (TargetStatus("10.0.0.1:8443", "ok", "aa" * 32, checked),
                   TargetStatus("10.0.0.2:8443", "stale", "99" * 32, checked),
                   TargetStatus("10.0.0.3:8443", "ok", "aa" * 32, checked),
                   TargetStatus("10.0.1.1:443", "unreachable", None, checked))
    before = CertificateStatus(State.VALID, current=info("aa" * 32), targets=old_results)
    assert not verification_due((POOL, SINGLE), before, NOW, hour)
    renewed = before.replace(current=info("bb" * 32, issued=NOW - dt.timedelta(minutes=1)))
    assert verification_due((POOL, SINGLE), renewed, NOW, hour)
    assert next_verification_at((POOL, SINGLE), renewed, NOW, hour) == NOW
    assert all(outdated(t, renewed.current) for t in old_results)
    pool, single = target_views((POOL, SINGLE), renewed.targets, renewed.current)
    assert {n.status for n in pool.nodes} == {UNVERIFIED}
    assert pool.status == UNVERIFIED and single.status == UNVERIFIED
    assert [n.checked_at for n in pool.nodes] == [checked] * 3  # the age stays visible
    assert "predates" in (pool.nodes[0].detail or "")
    # A result newer than the certificate that contradicts it (ok for another leaf,
    # stale for this one) was judged against another certificate too.
    later = NOW - dt.timedelta(seconds=10)
    assert outdated(TargetStatus("x:1", "ok", "aa" * 32, later), renewed.current)
    assert outdated(TargetStatus("x:1", "stale", "bb" * 32, later), renewed.current)
    assert not outdated(TargetStatus("x:1", "ok", "bb" * 32, later), renewed.current)
    assert not outdated(TargetStatus("x:1", "stale", "aa" * 32, later), renewed.current)


def test_divergence_becomes_one_alert_naming_the_nodes():
    from certlocker.lifecycle.verification import AlertOnDivergence

    sent = []

    class Sink:
        def send(self, alert):
            sent.append(alert)

    answers = dict(ALL_OK, **{"10.0.0.2:8443": "stale"})
    store, _, _, _, _ = scene(answers)
    verifier = Verifier(store, store.update_status, probe=ScriptedProbe(answers),
                        clock=FixedClock(NOW),
                        on_divergence=AlertOnDivergence(Sink(), FixedClock(NOW)))
    verifier.verify_certificate(REF)
    [alert] = sent
    assert alert.kind == "delivery-diverged" and alert.certificate == REF.id
    assert "10.0.0.2:8443 stale" in alert.summary and "1 stale" in alert.summary
    assert "PRIVATE" not in json.dumps(alert.to_json())


def test_a_divergence_is_alerted_once_until_the_divergent_nodes_change():
    answers = dict(ALL_OK, **{"10.0.0.2:8443": "stale"})
    store, verifier, _, alerts, probe = scene(answers)
    verifier.verify_certificate(REF)
    verifier.verify_certificate(REF)
    assert len(alerts) == 1  # the same stale node twice: told once
    answers["10.0.0.3:8443"] = "unreachable"
    verifier.verify_certificate(REF)
    assert len(alerts) == 2  # another node went wrong: told again
    answers.update({"10.0.0.2:8443": "ok", "10.0.0.3:8443": "ok"})
    verifier.verify_certificate(REF)
    answers["10.0.0.2:8443"] = "stale"
    verifier.verify_certificate(REF)
    assert len(alerts) == 3  # healed, then diverged again
