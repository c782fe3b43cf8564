"""Specs written with the Vault CLI are acted on within a minute (issue #14).

A real `certlocker reconcile` with an hourly sweep and a one-minute tick over real
OpenBao and Pebble; the specs are written with the real `bao` binary, as an operator
would, after the start-up sweep has finished: only the spec watch can find them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.test_reconciler import cert_versions, status
from tests.support.stack import Stack, devstack, free_port, log_events

pytestmark = pytest.mark.integration

DEADLINE = 60.0  # seconds from `bao kv put` to the certificate stored in Vault


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("watch-stack"), devstack.free_ports(),
                  pebble_env={"PEBBLE_WFE_NONCEREJECT": "0"})
    stack.up()
    try:
        for proc in stack.procs:
            if proc.name == "reconciler":
                proc.stop()  # ours runs with an hourly sweep, below
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def reconciler(stack: Stack) -> Iterator[devstack.Proc]:
    closed = free_port()  # the "broken" issuer's CA: nothing listens, every order fails
    proc = devstack.Proc.spawn(
        "watch-reconciler", [devstack.certlocker_binary(), "reconcile", "--interval", "60",
                             "--sweep-interval", "3600"],
        stack.state_dir / "watch-reconciler.log", marker="reconcile",
        env={**stack.service_env(),
             "CERTLOCKER_ISSUERS__BROKEN__DIRECTORY_URL": f"https://127.0.0.1:{closed}/dir"})
    try:
        devstack.wait_until(lambda: log_events(proc, "reconcile.sweep_finished"), 120,
                            interval=0.2, what="the start-up sweep")
        yield proc
    finally:
        proc.stop()
    assert not [e for e in log_events(proc) if e["event"] in (
        "reconcile.tick_failed", "reconcile.watch_failed", "spec_watch.scan_refused")]


def bao_put(stack: Stack, tmp: Path, service: str, name: str, dns_names: list[str],
            issuer: str = "pebble") -> float:
    """``bao kv put -mount=certlocker specs/dev/<service>/<name> @spec.json`` (after an
    administrator's grant of the names, also with the Vault CLI); returns the monotonic
    time the spec's write returned."""
    env = {"PATH": "/usr/bin:/bin", "BAO_ADDR": stack.vault_addr,
           "BAO_TOKEN": stack.root_token, "HOME": str(tmp)}
    grant = tmp / f"{service}-{name}-grant.json"
    grant.write_text(json.dumps({"zones": sorted({n.split(".", 1)[1] for n in dns_names})}))
    subprocess.run([devstack.find_binary("bao"), "kv", "put", "-mount=certlocker",
                    f"grants/dev/{service}", f"@{grant}"], check=True, capture_output=True,
                   timeout=30, stdin=subprocess.DEVNULL, env=env)
    spec = tmp / f"{service}-{name}.json"
    spec.write_text(json.dumps({"environment": "dev", "service": service, "name": name,
                                "dns_names": dns_names, "issuer": issuer,
                                "key_type": "ec-p256"}))
    subprocess.run([devstack.find_binary("bao"), "kv", "put", "-mount=certlocker",
                    f"specs/dev/{service}/{name}", f"@{spec}"], check=True,
                   capture_output=True, timeout=30, stdin=subprocess.DEVNULL, env=env)
    return time.monotonic()


def within_deadline(written: float, condition: Any, what: str) -> None:
    devstack.wait_until(condition, max(0.0, written + DEADLINE - time.monotonic()),
                        interval=0.2, max_interval=0.5, what=what)


def test_a_new_spec_written_with_the_vault_cli_is_issued_within_a_minute(
        stack: Stack, reconciler: devstack.Proc, tmp_path: Path) -> None:
    written = bao_put(stack, tmp_path, "watch", "new", ["new.watch.test"])
    within_deadline(written, lambda: cert_versions(stack, "watch", "new") == 1,
                    "the certificate of a spec written with bao")
    assert status(stack, "watch", "new")["state"] == "valid"


def test_a_changed_spec_is_reissued_within_a_minute(
        stack: Stack, reconciler: devstack.Proc, tmp_path: Path) -> None:
    written = bao_put(stack, tmp_path, "watch", "changed", ["changed.watch.test"])
    within_deadline(written, lambda: cert_versions(stack, "watch", "changed") == 1,
                    "the first certificate")
    written = bao_put(stack, tmp_path, "watch", "changed",
                      ["changed.watch.test", "www.changed.watch.test"])
    within_deadline(written, lambda: cert_versions(stack, "watch", "changed") == 2,
                    "the certificate reissued for the new name")
    current = status(stack, "watch", "changed")["current"]
    assert sorted(current["dns_names"]) == ["changed.watch.test", "www.changed.watch.test"]


def test_a_fixed_spec_is_tried_at_once_despite_the_backoff(
        stack: Stack, reconciler: devstack.Proc, tmp_path: Path) -> None:
    """The first issuance fails (its CA is unreachable) and backs off for minutes; the
    operator fixes the issuer with the Vault CLI and it is issued within a minute."""
    written = bao_put(stack, tmp_path, "watch", "fixed", ["fixed.watch.test"],
                      issuer="broken")
    within_deadline(written, lambda: _state(stack, "watch", "fixed") == "failed",
                    "the failed first attempt")
    assert status(stack, "watch", "fixed")["next_attempt_at"] is not None
    written = bao_put(stack, tmp_path, "watch", "fixed", ["fixed.watch.test"])
    within_deadline(written, lambda: cert_versions(stack, "watch", "fixed") == 1,
                    "the certificate of the fixed spec")
    assert [e for e in log_events(reconciler, "spec_watch.backoff_cleared")
            if e["certificate"] == "dev.watch.fixed"]


def _state(stack: Stack, service: str, name: str) -> str | None:
    try:
        return status(stack, service, name)["state"]
    except Exception:  # no status yet
        return None
