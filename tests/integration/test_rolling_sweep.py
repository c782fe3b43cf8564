"""The rolling sweep (docs/decisions/0007-steady-sweep.md) with two real `certlocker
reconcile` processes over real OpenBao and Pebble: they share one cursor in Vault, each
tick visits a budgeted slice, and a certificate whose due hint (and expiry entry) was
lost is repaired within the next pass, never issued twice.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from tests.support.kv import grant_names, live_versions
from tests.support.stack import Proc, Stack, devstack, log_events

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
SERVICE = "roll"
COUNT = 8
BUDGET = 30  # requests per minute: a slice of at most 5 certificates per step


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("rolling-stack"), devstack.free_ports(),
                  pebble_env={"PEBBLE_WFE_NONCEREJECT": "0"})
    stack.up()
    try:
        for proc in stack.procs:
            if proc.name == "reconciler":
                proc.stop()  # ours run below, with a small budget
        yield stack
    finally:
        stack.down()


def root(stack: Stack) -> Any:
    import hvac

    return hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)


def keys(client: Any, folder: str) -> list[str]:
    try:
        return list(client.secrets.kv.v2.list_secrets(path=folder, mount_point=MOUNT)
                    ["data"]["keys"])
    except Exception:  # hvac.exceptions.InvalidPath: an empty folder
        return []


def entries(client: Any, folder: str, cert_id: str) -> list[str]:
    """Paths of ``cert_id`` under ``system/schedule/`` or ``system/expiry/`` (a day
    folder, then minute folders for the schedule, then ids)."""
    found = []
    stack = [folder]
    while stack:
        current = stack.pop()
        for key in keys(client, current):
            if key.endswith("/"):
                stack.append(current + key)
            elif key == cert_id:
                found.append(current + key)
    return found


def cursor(stack: Stack) -> dict[str, Any]:
    data = root(stack).secrets.kv.v2.read_secret_version(
        path="system/sweep/cursor", mount_point=MOUNT, raise_on_deleted_version=True)
    return json.loads(data["data"]["data"]["json"])


def start(stack: Stack, name: str) -> Proc:
    proc = Proc.spawn(name, [devstack.certlocker_binary(), "reconcile", "--interval", "1",
                             "--sweep-interval", "2"],
                      stack.state_dir / f"{name}.log", cwd=devstack.REPO, marker="reconcile",
                      env={**stack.service_env(),
                           "CERTLOCKER_RECONCILE_SWEEP_BUDGET_PER_MINUTE": str(BUDGET)})
    stack._add(proc)
    return proc


def test_two_reconcilers_share_the_pass_and_repair_a_lost_hint_within_it(stack: Stack) -> None:
    client = root(stack)
    names = [f"c{i}" for i in range(COUNT)]
    grant_names(client, MOUNT, "dev", SERVICE, [f"{n}.{SERVICE}.test" for n in names])
    for n in names:  # straight into Vault: no hint, only a sweep (or the watch) finds them
        client.secrets.kv.v2.create_or_update_secret(
            mount_point=MOUNT, path=f"specs/dev/{SERVICE}/{n}",
            secret={"environment": "dev", "service": SERVICE, "name": n,
                    "dns_names": [f"{n}.{SERVICE}.test"], "issuer": "pebble",
                    "key_type": "ec-p256"})
    a, b = start(stack, "rolling-a"), start(stack, "rolling-b")
    try:
        devstack.wait_until(lambda: all(
            live_versions(client, MOUNT, f"certs/dev/{SERVICE}/{n}") == 1 for n in names),
            240, interval=1, what="every certificate issued")
        lost = f"dev.{SERVICE}.c3"
        devstack.wait_until(lambda: entries(client, "system/schedule/", lost), 120,
                            interval=1, what="c3's due hint")
        [hint] = entries(client, "system/schedule/", lost)
        [expiry] = entries(client, "system/expiry/", lost)
        passes = cursor(stack)["passes"]
        for path in (hint, expiry):  # lost, as a crash between two writes loses them
            client.secrets.kv.v2.delete_metadata_and_all_versions(path=path,
                                                                  mount_point=MOUNT)
        assert not entries(client, "system/schedule/", lost)

        devstack.wait_until(lambda: cursor(stack)["passes"] >= passes + 2, 300,
                            interval=1, what="the next full pass")
        assert entries(client, "system/schedule/", lost) == [hint]  # filed again
        assert entries(client, "system/expiry/", lost) == [expiry]
        assert cursor(stack)["last_pass"] == COUNT  # every certificate, once a pass
        # never issued twice, though both reconcilers swept
        assert all(live_versions(client, MOUNT, f"certs/dev/{SERVICE}/{n}") == 1
                   for n in names)
        events = log_events(a) + log_events(b)
        # both took slices of the shared pass, none larger than the budget allows
        swept = [sum(e["swept"].values()) for e in events
                 if e["event"] == "reconcile.tick" and e.get("swept")]
        assert swept and max(swept) <= (BUDGET - 2) // 5  # the credit is capped at a minute
        assert {p.name for p in (a, b)
                if any(e.get("swept") for e in log_events(p)
                       if e["event"] == "reconcile.tick")} == {"rolling-a", "rolling-b"}
        assert [e for e in events if e["event"] == "reconcile.sweep_finished"
                and e.get("rolling")]
        assert not [e for e in events if e["event"] in (
            "reconcile.tick_failed", "reconcile.certificate_error")]
    finally:
        a.stop()
        b.stop()
