"""The target allow-list (delivery.target_policy), its settings, its Vault extension
(lifecycle.target_allowlist) and the verifier's screening: pure, with an in-memory store,
a scripted resolver and a scripted probe (no network)."""

from __future__ import annotations

import datetime as dt

import pytest

from certlocker import settings as settings_mod
from certlocker.delivery.target_policy import Refusal, TargetPolicy, admit, check, check_target
from certlocker.errors import ConfigurationError, TargetForbidden
from certlocker.lifecycle.service import _listed
from certlocker.lifecycle.target_allowlist import AllowList, require_allowed
from certlocker.lifecycle.verification import Verifier, screen
from certlocker.models import (CertificateRef, CertificateSpec, CertificateStatus, State,
                               Target)
from tests.support.memory_store import MemoryStore
from tests.unit.test_verification import REF, ScriptedProbe, info

NOW = dt.datetime(2030, 1, 10, 12, tzinfo=dt.timezone.utc)
POLICY = TargetPolicy.parse(["10.0.0.0/24", "2001:db8::/64"], [443, "8000-8099"],
                            ["*.example.com", "exact.test"])


def never(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must not be resolved")


@pytest.mark.parametrize("host, port, rule", [
    ("10.0.0.7", 443, None),
    ("10.0.0.7", 8050, None),
    ("10.0.0.7", 8200, "port"),
    ("10.0.1.7", 443, "network"),
    ("127.0.0.1", 443, "network"),
    ("2001:db8::5", 443, None),
    ("::1", 443, "network"),
    ("a.b.example.com", 443, None),
    ("WWW.Example.COM.", 443, None),
    ("example.com", 443, "host"),  # "*." names what is under the domain, not the domain
    ("evil-example.com", 443, "host"),
    ("exact.test", 443, None),
    ("sub.exact.test", 443, "host"),
])
def test_the_static_rules_name_the_rule_that_refuses(host: str, port: int,
                                                     rule: str | None) -> None:
    refusal = check(POLICY, host, port)
    assert (refusal.rule if refusal else None) == rule
    if refusal:
        assert host in refusal.endpoint and str(port) in refusal.endpoint


def test_an_empty_allow_list_allows_nothing() -> None:
    empty = TargetPolicy()
    assert check(empty, "127.0.0.1", 443).rule == "port"
    assert check(TargetPolicy.parse([], ["1-65535"], ["*"]), "127.0.0.1", 443).rule == "network"
    assert settings_mod.from_mapping({"vault_addr": "http://127.0.0.1:1",
                                      "vault_token": "t"}).targets == empty


def test_a_pool_target_needs_every_pinned_address_inside_the_networks() -> None:
    assert check_target(POLICY, Target("www.example.com:443", ips=("10.0.0.1",))) is None
    refusal = check_target(POLICY, Target("www.example.com:443", ips=("10.0.0.1", "10.9.0.1")))
    assert refusal.rule == "network" and "10.9.0.1" in refusal.reason
    assert refusal.endpoint == "www.example.com:443"


def test_a_permitted_name_resolving_to_a_forbidden_address_is_refused() -> None:
    refusal = admit(POLICY, "www.example.com", 443, resolve=lambda h, p: ["127.0.0.1"])
    assert isinstance(refusal, Refusal) and refusal.rule == "network"
    assert "127.0.0.1" in refusal.reason
    # one forbidden address among allowed ones refuses the whole name
    mixed = admit(POLICY, "www.example.com", 443, resolve=lambda h, p: ["10.0.0.1", "10.1.0.1"])
    assert isinstance(mixed, Refusal)


def test_admission_answers_the_checked_addresses_to_dial() -> None:
    assert admit(POLICY, "www.example.com", 443,
                 resolve=lambda h, p: ["10.0.0.2", "10.0.0.3", "10.0.0.2"]) == (
        "10.0.0.2", "10.0.0.3")
    assert admit(POLICY, "www.example.com", 443, pinned="10.0.0.9", resolve=never) == (
        "10.0.0.9",)
    assert admit(POLICY, "10.0.0.4", 443, resolve=never) == ("10.0.0.4",)


def test_a_name_refused_by_port_or_pattern_is_never_resolved() -> None:
    assert admit(POLICY, "www.example.com", 22, resolve=never).rule == "port"
    assert admit(POLICY, "vault.internal", 443, resolve=never).rule == "host"


def test_settings_read_the_targets_table_and_the_environment() -> None:
    loaded = settings_mod.load(environ={
        "CERTLOCKER_VAULT_ADDR": "http://127.0.0.1:1", "CERTLOCKER_VAULT_TOKEN": "t",
        "CERTLOCKER_TARGETS__ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128",
        "CERTLOCKER_TARGETS__ALLOWED_PORTS": "443,8000-8999",
        "CERTLOCKER_TARGETS__ALLOWED_HOSTS": "*.example.com",
        "CERTLOCKER_TARGETS__REFRESH_SECONDS": "5"})
    assert loaded.targets.to_json() == {"allowed_networks": ["127.0.0.0/8", "::1/128"],
                                        "allowed_ports": ["443", "8000-8999"],
                                        "allowed_hosts": ["*.example.com"]}
    assert loaded.targets_refresh_seconds == 5


@pytest.mark.parametrize("table, named", [
    ({"allowed_networks": ["10.0.0.1/8"]}, "allowed_networks"),
    ({"allowed_ports": [0]}, "allowed_ports"),
    ({"allowed_ports": ["443-80"]}, "allowed_ports"),
    ({"allowed_hosts": ["a.*.example"]}, "allowed_hosts"),
    ({"allowed_ips": ["10.0.0.0/8"]}, "targets.allowed_ips"),
    ({"refresh_seconds": 99999}, "refresh_seconds"),
])
def test_bad_target_settings_fail_at_start_naming_the_key(table: dict, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        settings_mod.from_mapping({"vault_addr": "http://127.0.0.1:1", "vault_token": "t",
                                   "targets": table})


def test_the_vault_document_extends_the_settings_and_is_re_read_after_refresh() -> None:
    store = MemoryStore()
    clock = [0.0]
    allow = AllowList(POLICY, store, refresh=30, monotonic=lambda: clock[0])
    assert check(allow(), "192.0.2.1", 9443) is not None
    store.write(store.paths.target_policy(), {"allowed_networks": "192.0.2.0/24",
                                              "allowed_ports": "9443"}, cas=None)
    assert check(allow(), "192.0.2.1", 9443) is not None  # cached for 30 s
    clock[0] = 31.0
    extended = allow()
    assert check(extended, "192.0.2.1", 9443) is None
    assert check(extended, "10.0.0.1", 443) is None  # the settings still apply


def test_an_invalid_vault_document_is_ignored_whole() -> None:
    store = MemoryStore()
    store.write(store.paths.target_policy(), {"allowed_networks": ["192.0.2.0/24"],
                                              "allowed_ports": ["not-a-port"]}, cas=None)
    assert AllowList(POLICY, store, refresh=0)() == POLICY


def test_listings_skip_the_administrators_documents_under_specs() -> None:
    store = MemoryStore()
    store.write(store.paths.target_policy(), {"allowed_ports": "443"}, cas=None)
    spec = CertificateSpec(CertificateRef("prod", "web", "www"), ("www.example",), "pebble")
    store.write(store.paths.spec(spec.ref), spec.to_json(), cas=None)
    assert list(_listed(store, store.paths.specs_dir)) == [spec.ref]


def test_a_declaration_names_the_forbidden_target_its_index_and_the_rule() -> None:
    require_allowed(POLICY, [Target("10.0.0.1:443")])
    with pytest.raises(TargetForbidden) as caught:
        require_allowed(POLICY, [Target("10.0.0.1:443"), Target("127.0.0.1:8200")])
    assert caught.value.status == 403
    assert caught.value.extra == {"field": "targets/1", "target": "127.0.0.1:8200",
                                  "rule": "port"}


def test_screening_keeps_a_pools_allowed_nodes_and_reports_the_others() -> None:
    pool = Target("www.example.com:443", ips=("10.0.0.1", "172.16.0.1"))
    allowed, refused = screen([pool, Target("127.0.0.1:443"), Target("10.0.0.5:8443")],
                              POLICY, NOW)
    assert allowed == (Target("www.example.com:443", ips=("10.0.0.1",)),)
    assert {(r.address, r.status) for r in refused} == {
        ("172.16.0.1:443", "forbidden"), ("127.0.0.1:443", "forbidden"),
        ("10.0.0.5:8443", "forbidden")}
    assert all(r.checked_at == NOW and r.served_sha256 is None and r.detail for r in refused)


def test_the_verifier_never_hands_a_forbidden_target_to_its_probe() -> None:
    from tests.unit.test_verification import MemoryStore as SpecStore

    store = SpecStore()
    store.specs[REF] = CertificateSpec(REF, ("www.example",), "pebble", targets=(
        Target("10.0.0.1:443"), Target("127.0.0.1:8200")))
    store.write_status(REF, CertificateStatus(State.VALID, current=info("aa" * 32)), cas=0)
    seen: list[str] = []
    probe = ScriptedProbe({"10.0.0.1:443": "ok"})

    def recording(expected, history, targets, **kwargs):
        seen.extend(t.address for t in targets)
        return probe(expected, history, targets, **kwargs)

    verifier = Verifier(store, store.update_status, probe=recording, policy=lambda: POLICY)
    status = verifier.verify_certificate(REF)
    assert seen == ["10.0.0.1:443"]
    by_address = {t.address: t for t in status.targets}
    assert by_address["10.0.0.1:443"].status == "ok"
    assert by_address["127.0.0.1:8200"].status == "forbidden"
    assert "port 8200" in by_address["127.0.0.1:8200"].detail
