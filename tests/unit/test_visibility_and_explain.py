"""Pure parts of issue #17's operator view: which folders a caller whose token cannot
list the whole inventory may list (``lifecycle.visibility``, over an in-memory store
with a glob policy standing in for Vault's), and the words the certificate page gives
for the next renewal (``lifecycle.explain``)."""

from __future__ import annotations

import datetime as dt
import fnmatch

import pytest

from certlocker.errors import AccessDenied
from certlocker.lifecycle.policy import explain
from certlocker.lifecycle import visibility
from certlocker.models import (AriWindow, CertificateInfo, CertificateRef, CertificateSpec,
                               CertificateStatus, State)
from tests.support.memory_store import MemoryStore

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


class PolicyStore:
    """A caller's view of ``store`` through a list policy: ``list`` on the metadata
    paths matching one of ``globs`` (Vault's trailing ``*`` is a prefix match), as
    Vault answers LIST and ``sys/capabilities-self``."""

    def __init__(self, store: MemoryStore, *globs: str) -> None:
        self.store, self.globs, self.paths = store, globs, store.paths
        self.probes = 0

    def _may(self, api_path: str) -> bool:
        return any(fnmatch.fnmatchcase(api_path, g) for g in self.globs)

    def list(self, logical_dir: str) -> list[str]:
        if not self._may(self.paths.metadata_path(logical_dir.rstrip("/")) + "/"):
            raise AccessDenied(f"Vault denied access to {logical_dir}")
        return self.store.list(logical_dir)

    def capabilities_of(self, api_paths: list[str]) -> dict[str, set[str]]:
        self.probes += 1
        return {p: {"list"} if self._may(p) else set() for p in api_paths}


def declared(*ids: str) -> MemoryStore:
    store = MemoryStore()
    for cert_id in ids:
        ref = CertificateRef.parse_id(cert_id)
        store.create_spec(CertificateSpec(ref, (f"{ref.name}.test",), "pebble"))
    return store


def test_a_team_sees_the_folders_vault_lets_it_list_and_nothing_else() -> None:
    own = declared("prod.payments-api.www", "prod.payments-web.www", "dev.payments-api.x",
                   "prod.ledger.www")
    team = PolicyStore(own, "certlocker/metadata/specs/*/payments-*")
    found = visibility.listable(team, own)
    assert found.scope == visibility.PERMITTED and found.folders == 3
    assert sorted(r.id for r in found.refs) == ["dev.payments-api.x",
                                                "prod.payments-api.www",
                                                "prod.payments-web.www"]
    only_prod = visibility.listable(team, own, "prod")
    assert sorted(r.id for r in only_prod.refs) == ["prod.payments-api.www",
                                                    "prod.payments-web.www"]
    with pytest.raises(AccessDenied):
        list(visibility.listable(team, own, "prod", "ledger").refs)


def test_a_token_that_may_list_everything_is_not_probed() -> None:
    own = declared("prod.a.www", "dev.b.www")
    admin = PolicyStore(own, "certlocker/metadata/specs/*")
    found = visibility.listable(admin, own)
    assert found.scope == visibility.ALL and admin.probes == 0
    assert sorted(r.id for r in found.refs) == ["dev.b.www", "prod.a.www"]


def test_a_token_that_may_list_nothing_is_told_apart_from_an_empty_inventory() -> None:
    own = declared("prod.a.www")
    found = visibility.listable(PolicyStore(own), own)
    assert found.scope == visibility.PERMITTED and found.folders == 0
    assert list(found.refs) == []


def test_the_probe_asks_vault_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(visibility, "PROBE_BATCH", 2)
    own = declared(*(f"prod.payments-{i}.www" for i in range(5)))
    team = PolicyStore(own, "certlocker/metadata/specs/*/payments-*")
    assert len(list(visibility.listable(team, own).refs)) == 5
    assert team.probes == 3


def _info(days: int = 90, age: int = 1) -> CertificateInfo:
    start = NOW - dt.timedelta(days=age)
    return CertificateInfo("01", start, start + dt.timedelta(days=days), "ab" * 32,
                           "Pebble", ("www.test",), 1, issuer_name="pebble")


SPEC = CertificateSpec(CertificateRef("prod", "a", "www"), ("www.test",), "pebble")


def test_the_next_renewal_says_when_and_why() -> None:
    valid = CertificateStatus(State.VALID, current=_info())
    plan = explain.next_renewal(SPEC, valid, NOW)
    assert plan.at == _info().not_after - dt.timedelta(days=30)
    assert "one third of its lifetime" in plan.why

    custom = explain.next_renewal(
        CertificateSpec(SPEC.ref, SPEC.dns_names, "pebble", renew_before="10d"), valid, NOW)
    assert custom.at == _info().not_after - dt.timedelta(days=10)
    assert "renew_before 10d" in custom.why

    window = AriWindow(serial="01", start=NOW + dt.timedelta(days=5),
                       end=NOW + dt.timedelta(days=6), checked_at=NOW,
                       next_check_at=NOW + dt.timedelta(hours=6))
    ari = explain.next_renewal(SPEC, valid.replace(ari=window), NOW)
    assert ari.at is not None and window.start <= ari.at <= window.end
    assert "ARI" in ari.why


def test_a_failing_retired_or_new_certificate_says_so() -> None:
    failed = CertificateStatus(State.FAILED, current=_info(age=70), last_error="CA said no",
                               attempts=2, next_attempt_at=NOW + dt.timedelta(minutes=5))
    retry = explain.next_renewal(SPEC, failed, NOW)
    assert retry.at == NOW + dt.timedelta(minutes=5)
    assert "2 failed attempt(s)" in retry.why and "CA said no" in retry.why

    refused = explain.next_renewal(SPEC, failed.replace(retryable=False), NOW)
    assert refused.at is None and "refused" in refused.why

    retired = explain.next_renewal(SPEC, CertificateStatus(State.RETIRED), NOW)
    assert retired.at is None and "retired" in retired.why

    new = explain.next_renewal(SPEC, None, NOW)
    assert new.at == NOW and "no certificate has been issued" in new.why
