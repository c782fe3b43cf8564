"""A CA that forgets certlocker's ACME account (real Pebble restarted: it keeps no state)
while certlocker keeps running: the next issuance registers again, once, audited, with
no restart, and every process that cached the old account picks the new one up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from certlocker.audit.chain import AuditLog
from certlocker.clock import SystemClock
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.issuance.base import IssueRequest
from certlocker.lifecycle.records.vault_adapters import StoreAccounts, StoreChallenges
from certlocker.models import CertificateRef, KeyType
from certlocker.paths import VaultPaths
from certlocker.settings import IssuerSettings
from certlocker.vault.audit_store import vault_audit_lanes
from certlocker.vault.store import VaultStore
from devstack import Proc, _base_env, find_binary, wait_http
from tests.support.acme_helpers import MemoryJournal
from tests.support.audit_trail import stored_events
from tests.support.stack import SHARED_PEBBLE_ENV, CertlockerStack, running_certlocker
from tests.support.pools import threads

pytestmark = pytest.mark.integration

MOUNT = "certlocker"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertlockerStack]:
    """A private stack: restarting its Pebble must not disturb the shared one."""
    with running_certlocker(tmp_path_factory.mktemp("acme-recovery")) as running:
        yield running


def api(stack: CertlockerStack, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{stack.api_url}{path}", timeout=150,
                            headers={"X-Vault-Token": stack.operator_token}, **kwargs)


def declare(stack: CertlockerStack, service: str) -> requests.Response:
    return api(stack, "POST", "/v1/certificates?wait=90", json={
        "environment": "prod", "service": service, "name": "www",
        "dns_names": [f"www.{service}.test"]})


def restart_pebble(stack: CertlockerStack) -> None:
    """Stop Pebble and start it again on the same ports with the same TLS listener
    certificate: a CA whose accounts, orders and certificates are all gone."""
    inner = stack.stack
    old = next(p for p in inner.procs if p.name == "pebble")
    old.stop()
    port = inner.ports["pebble"]
    config = inner.state_dir / f"pebble-{port}.json"
    proc = Proc.spawn("pebble", [find_binary("pebble"), "-config", str(config),
                                 "-dnsserver", f"127.0.0.1:{inner.ports['dns']}"],
                      inner.state_dir / "pebble-restarted.log",
                      env=_base_env({"PEBBLE_VA_NOSLEEP": "1", **SHARED_PEBBLE_ENV}),
                      marker=str(config))
    inner._add(proc)  # stopped with the stack
    wait_http(stack.directory_url, 30, verify=str(stack.ca_bundle), proc=proc)


def registrations(stack: CertlockerStack) -> list[dict[str, Any]]:
    root = stack.client(stack.root_token)
    return [e for e in stored_events(root, MOUNT) if e["action"] == "acme.account.registered"]


def stored_account(store: VaultStore, directory_url: str) -> dict[str, Any]:
    doc, _ = StoreAccounts(store, directory_url).load()
    assert doc is not None
    return doc


def test_a_forgotten_account_is_registered_again_once_without_a_restart(
        stack: CertlockerStack) -> None:
    assert declare(stack, "before").status_code == 201
    store = VaultStore.connect(stack.vault_addr, stack.root_token, VaultPaths())
    before = stored_account(store, stack.directory_url)
    assert len(registrations(stack)) == 1
    # Another certlocker process with the account cached (built like the API's issuer).
    other = AcmeIssuer(
        IssuerSettings(name="pebble", directory_url=stack.directory_url,
                       ca_bundle=str(stack.ca_bundle)),
        StoreAccounts(store, stack.directory_url), StoreChallenges(store),
        audit=AuditLog(vault_audit_lanes(store, threads(1, "audit-head-hint")), SystemClock()),
        actor="other-process")
    assert other.client().net.account.uri == before["uri"]
    workers = {p.name: p.pid for p in stack.stack.procs if p.name in ("api", "reconciler")}

    restart_pebble(stack)

    after_restart = declare(stack, "after")
    assert after_restart.status_code == 201, after_restart.text
    assert after_restart.json()["status"] == "valid"
    renewed = api(stack, "POST", "/v1/certificates/prod.before.www/renew?wait=90")
    assert renewed.json()["status"] == "valid", renewed.text
    assert renewed.json()["last_error"] is None
    issued = other.issue(IssueRequest(CertificateRef("prod", "other", "www"),
                                      ("www.other.test",), KeyType.EC_P256), MemoryJournal())
    assert issued.info.dns_names == ("www.other.test",)

    account = stored_account(store, stack.directory_url)
    assert account["uri"] != before["uri"] and account["key"] != before["key"]
    assert other.client().net.account.uri == account["uri"]
    events = registrations(stack)
    assert len(events) == 2, events  # the first registration, and one after the reset
    assert events_by_seq_time(events)[-1]["details"]["replaces"] == before["uri"]
    assert events_by_seq_time(events)[-1]["details"]["account"] == account["uri"]
    assert all(p.alive() for p in stack.stack.procs if p.name in workers)
    assert {p.name: p.pid for p in stack.stack.procs if p.name in workers} == workers


def events_by_seq_time(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: e["time"])


def test_no_log_line_or_event_holds_the_account_key(stack: CertlockerStack) -> None:
    store = VaultStore.connect(stack.vault_addr, stack.root_token, VaultPaths())
    secret = stored_account(store, stack.directory_url)["key"]["d"]
    assert all(secret not in json.dumps(e) for e in registrations(stack))
    for log in Path(stack.state_dir).glob("*.log"):
        assert secret not in log.read_text(errors="replace"), log
