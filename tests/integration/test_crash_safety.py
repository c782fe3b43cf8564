"""kill -9 of the API workers in the middle of 20 issuances loses nothing.

A dedicated stack (its own OpenBao, Pebble, gunicorn, reconciler on free ports). Twenty
certificates are declared without waiting; once some are issued and others are still in
flight, every gunicorn worker gets SIGKILL (the master respawns them). The reconciler
(or, where it does not exist, a renew request) finishes the work once the dead workers'
leases expire. Afterwards every certificate is valid, every bundle's key matches its
certificate, and no in-flight key, held lease or challenge answer is left behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import hvac.exceptions
import pytest
import requests

from certlocker.issuance import keys
from tests.support.stack import SHARED_PEBBLE_ENV

import devstack  # noqa: E402  (vault-dev is on sys.path through tests.support.stack)
from devstack import Proc, Stack

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
COUNT = 20
ISSUANCE_TIMEOUT = 30  # the dead workers' leases expire 60 s after this
WAIT_FOR_RECOVERY = 600.0


class CrashStack(Stack):
    """The dev stack with a short issuance timeout, so dead workers' leases expire soon."""

    def service_env(self) -> dict[str, str]:
        return {**super().service_env(),
                "CERTLOCKER_ISSUANCE_TIMEOUT_SECONDS": str(ISSUANCE_TIMEOUT)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("crash-stack")
    stack = CrashStack(state, devstack.free_ports(), pebble_env=SHARED_PEBBLE_ENV)
    stack.up()
    try:
        reconciler = next((p for p in stack.procs if p.name == "reconciler"), None)
        if reconciler is not None:  # the same command, ticking often enough for a test
            reconciler.stop()
            stack._add(Proc.spawn("reconciler-fast", [devstack.certlocker_binary(), "reconcile",
                                                      "--interval", "2"],
                                  state / "reconciler.log", env=stack.service_env(),
                                  cwd=devstack.REPO, marker="reconcile"))
        yield stack
    finally:
        stack.down()


def poll(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """``check`` until it answers truthy (``devstack.wait_until``, a steady interval)."""
    return devstack.wait_until(check, timeout, interval, max_interval=interval, what=what)


def workers(master: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{master}/task").iterdir():
        found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def leaves(root: Any, directory: str) -> list[str]:
    """Every secret under ``directory`` (recursive KV v2 LIST)."""
    try:
        keys_ = root.secrets.kv.v2.list_secrets(path=directory, mount_point=MOUNT)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []
    out = []
    for key in keys_:
        out += leaves(root, directory + key) if key.endswith("/") else [directory + key]
    return out


def read(root: Any, path: str) -> dict[str, Any]:
    return root.secrets.kv.v2.read_secret_version(
        path=path, mount_point=MOUNT, raise_on_deleted_version=True)["data"]["data"]


def test_sigkill_of_the_workers_mid_flight_loses_nothing(stack: Stack) -> None:
    import hvac

    root = hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)
    session = requests.Session()
    session.headers["X-Vault-Token"] = stack.operator_token or ""
    ids = [f"prod.crash.c{i:02d}" for i in range(COUNT)]
    for i in range(COUNT):
        resp = session.post(f"{stack.api_url}/v1/certificates", timeout=30, json={
            "environment": "prod", "service": "crash", "name": f"c{i:02d}",
            "dns_names": [f"c{i:02d}.crash.test"]})
        assert resp.status_code in (201, 202), resp.text

    def state(cert_id: str) -> str:
        try:
            found = root.secrets.kv.v2.read_secret_version(
                path="status/" + cert_id.replace(".", "/"), mount_point=MOUNT,
                raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath:
            return "pending"  # a new certificate has no status record until issued
        return found["data"]["data"]["state"]

    # Mid-flight: some certificates issued, some keys journaled and not yet stored.
    poll("an issuance in flight next to a finished one",
         lambda: leaves(root, "system/inflight/") and "valid" in map(state, ids), 60, 0.02)
    master = next(p for p in stack.procs if p.name == "api").pid
    before = workers(master)
    assert before
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    unfinished = [i for i in ids if state(i) != "valid"]
    assert unfinished, "the kill came after all issuances ended: nothing was tested"
    def respawned() -> bool:
        if not set(workers(master)) - set(before):
            return False
        try:
            return requests.get(f"{stack.api_url}/readyz", timeout=5).ok
        except requests.RequestException:
            return False  # a fresh worker still starting

    poll("gunicorn to respawn its workers", respawned, 120)

    reconciling = any(p.name.startswith("reconciler") for p in stack.procs)

    def all_valid() -> bool:
        pending = [i for i in ids if state(i) != "valid"]
        if not reconciling:
            for cert_id in pending:  # without a reconciler, an operator's renew
                session.post(f"{stack.api_url}/v1/certificates/{cert_id}/renew", timeout=30)
        return not pending

    poll("every certificate to be issued after the crash", all_valid, WAIT_FOR_RECOVERY, 2.0)

    for cert_id in ids:
        path = cert_id.replace(".", "/")
        bundle = read(root, "certs/" + path)
        key = keys.from_pem(bundle["private_key"])
        assert keys.public_key_matches(key, bundle["certificate"]), cert_id
        assert bundle["fullchain"].startswith(bundle["certificate"])
        status = read(root, "status/" + path)
        assert status["current"]["serial"] == bundle["serial"], cert_id

    assert leaves(root, "system/inflight/") == []
    assert leaves(root, "system/challenges/") == []
    for lease in leaves(root, "system/leases/"):
        # released, or left by a killed worker and bounded by its TTL
        doc = read_json(root, lease)
        if doc.get("holder") is not None:
            assert int(doc["holder"].split(":")[1]) in before, (lease, doc)
            assert doc["expires"] <= time.time() + ISSUANCE_TIMEOUT + 60, (lease, doc)


def read_json(root: Any, path: str) -> dict[str, Any]:
    import json

    data = read(root, path)
    return json.loads(data["json"]) if "json" in data else data
