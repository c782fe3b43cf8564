"""Acknowledged means durable: a request answered 2xx is done even if every certlocker
process is killed right after the answer.

A dedicated stack (its own OpenBao, Pebble, gunicorn, reconciler on free ports). Several
``renew?wait=0`` (plus a declaration and a keyCompromise revocation) are answered, then
within half a second every certlocker process gets SIGKILL: the work queued in their
thread pools is gone, only what is in Vault remains. Once they are started again every
renewed certificate has a new serial, the declared one is issued and the revoked one
replaced. Then the same with the reconciler left running past its start-up sweep: only
the API dies, and the reconciler's next ticks do the renewals (no sweep runs meanwhile).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import hvac
import hvac.exceptions
import pytest
import requests

from certlocker.issuance import keys
from tests.support.stack import SHARED_PEBBLE_ENV, log_events

import devstack  # noqa: E402  (vault-dev is on sys.path through tests.support.stack)
from devstack import Proc, Stack

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
COUNT = 8
ISSUANCE_TIMEOUT = 20  # the killed processes' leases expire 60 s after this
WAIT_FOR_RECOVERY = 400.0
KILL_WITHIN = 0.5


class DurableStack(Stack):
    """The dev stack with a short issuance timeout, so dead processes' leases expire soon."""

    def service_env(self) -> dict[str, str]:
        return {**super().service_env(),
                "CERTLOCKER_ISSUANCE_TIMEOUT_SECONDS": str(ISSUANCE_TIMEOUT)}


def start_api(stack: Stack, generation: int) -> Proc:
    proc = devstack.spawn_api(f"api-{generation}", stack.ports["api"],
                              stack.state_dir / f"api-{generation}.log", stack.service_env())
    stack._add(proc)
    devstack.wait_http(f"{stack.api_url}/readyz", 120, proc=proc)
    return proc


def start_reconciler(stack: Stack, generation: int) -> Proc:
    """``certlocker reconcile`` ticking every 2 s; its start-up sweep has finished when
    this returns, so what it does next comes from ticks."""
    proc = Proc.spawn(f"reconciler-{generation}", [devstack.certlocker_binary(), "reconcile",
                                                   "--interval", "2"],
                      stack.state_dir / f"reconciler-{generation}.log",
                      env=stack.service_env(), cwd=devstack.REPO, marker="reconcile")
    stack._add(proc)
    poll("the reconciler's start-up sweep",
         lambda: log_events(proc, "reconcile.sweep_finished"), 300)
    return proc


@contextlib.contextmanager
def durable_stack(state: Path) -> Iterator[Stack]:
    """The dev stack without its reconciler (a test starts one that ticks often)."""
    stack = DurableStack(state, devstack.free_ports(), pebble_env=SHARED_PEBBLE_ENV)
    stack.up()
    try:
        for proc in [p for p in stack.procs if p.name == "reconciler"]:
            proc.stop()  # replaced by one that ticks often enough for a test
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with durable_stack(tmp_path_factory.mktemp("durable-stack")) as running:
        yield running


def poll(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """``check`` until it answers truthy (``devstack.wait_until``, a steady interval)."""
    return devstack.wait_until(check, timeout, interval, max_interval=interval, what=what)


def kill(procs: list[Proc]) -> None:
    """SIGKILL every process of their sessions (a gunicorn master and its workers), by PID."""
    for proc in procs:
        for pid in proc.members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def reap(procs: list[Proc]) -> None:
    for proc in procs:
        poll(f"{proc.name} to die", lambda proc=proc: not proc._reap_and_list(), 30, 0.1)


class Client:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.root = hvac.Client(url=stack.vault_addr, token=stack.root_token, timeout=10)
        self.session = requests.Session()
        self.session.headers["X-Vault-Token"] = stack.operator_token or ""

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.stack.api_url}{path}", timeout=60,
                                    **kwargs)

    def declare(self, name: str, wait: int) -> requests.Response:
        return self.call("POST", f"/v1/certificates?wait={wait}", json={
            "environment": "prod", "service": "durable", "name": name,
            "dns_names": [f"{name}.durable.test"]})

    def read(self, path: str) -> dict[str, Any] | None:
        try:
            return self.root.secrets.kv.v2.read_secret_version(
                path=path, mount_point=MOUNT, raise_on_deleted_version=True)["data"]["data"]
        except hvac.exceptions.InvalidPath:
            return None

    def status(self, cert_id: str) -> dict[str, Any]:
        return self.read("status/" + cert_id.replace(".", "/")) or {"state": "pending"}

    def serial(self, cert_id: str) -> str | None:
        current = self.status(cert_id).get("current")
        return current["serial"] if current else None

    def renew_all(self, ids: list[str]) -> float:
        """``renew?wait=0`` for every id at once; returns the monotonic time of the last
        answer. Each must be a 2xx: an acknowledgement."""
        def renew(cert_id: str) -> tuple[requests.Response, float]:
            resp = self.call("POST", f"/v1/certificates/{cert_id}/renew?wait=0")
            return resp, time.monotonic()

        with cf.ThreadPoolExecutor(len(ids)) as pool:
            answers = list(pool.map(renew, ids))
        for resp, _ in answers:
            assert resp.status_code in (200, 202), resp.text
        return max(at for _, at in answers)

    def assert_consistent(self, cert_id: str) -> None:
        """The stored bundle's key matches its certificate, and the status names it."""
        path = cert_id.replace(".", "/")
        bundle = self.read("certs/" + path)
        assert bundle is not None, cert_id
        key = keys.from_pem(bundle["private_key"])
        assert keys.public_key_matches(key, bundle["certificate"]), cert_id
        status = self.status(cert_id)
        assert status["current"]["serial"] == bundle["serial"], cert_id
        assert status.get("renewal_request") is None, (cert_id, status)


def issued(client: Client, names: list[str]) -> list[str]:
    """Declare and wait until each is issued."""
    with cf.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: client.declare(n, 60), names))
    for resp in answers:
        assert resp.status_code in (201, 202), resp.text
    ids = [resp.json()["id"] for resp in answers]
    poll("the declared certificates to be issued",
         lambda: all(client.status(i)["state"] == "valid" for i in ids), 300, 1.0)
    return ids


@pytest.mark.timeout(900)  # the killed processes' leases must expire first
def test_answered_requests_survive_sigkill_of_every_certlocker_process(stack: Stack) -> None:
    client = Client(stack)
    reconciler = start_reconciler(stack, 1)
    ids = issued(client, [f"r{i}" for i in range(COUNT)] + ["rvk"])
    revoked_id = ids.pop()
    before = {i: client.serial(i) for i in ids + [revoked_id]}
    api = next(p for p in stack.procs if p.name == "api")

    revoke = client.call("POST", f"/v1/certificates/{revoked_id}/revoke?wait=0",
                         json={"reason": "keyCompromise"})
    assert revoke.status_code in (200, 202), revoke.text
    declared = client.declare("late", 0)
    assert declared.status_code in (201, 202), declared.text
    answered = client.renew_all(ids)
    kill([api, reconciler])
    assert time.monotonic() - answered < KILL_WITHIN, "killed too late: nothing was tested"
    reap([api, reconciler])
    unchanged = [i for i in ids if client.serial(i) == before[i]]
    assert unchanged, "every renewal finished before the kill: nothing was tested"

    start_api(stack, 2)
    start_reconciler(stack, 2)

    def done() -> bool:
        return (all(client.serial(i) != before[i] for i in ids)
                and client.status("prod.durable.late")["state"] == "valid"
                and (client.status(revoked_id).get("revocation") or {}).get("phase") == "done")

    poll("every acknowledged request to be carried out", done, WAIT_FOR_RECOVERY, 2.0)
    for cert_id in ids + ["prod.durable.late", revoked_id]:
        client.assert_consistent(cert_id)
    assert client.serial(revoked_id) != before[revoked_id]


@pytest.mark.timeout(900)
def test_a_renewal_whose_api_died_is_done_by_the_reconcilers_next_ticks(stack: Stack) -> None:
    """No sweep helps here: the reconciler swept at start-up, before the requests. The API
    is started again at once (it answers the CA's http-01 challenges), but only the
    reconciler knows of the renewals, from Vault."""
    client = Client(stack)
    if not any(p.name.startswith("api") and p.members() for p in stack.procs):
        start_api(stack, 3)
    reconciler = next((p for p in stack.procs
                       if p.name.startswith("reconciler") and p.members()), None)
    if reconciler is None:
        reconciler = start_reconciler(stack, 3)
    ids = issued(client, [f"t{i}" for i in range(COUNT)])
    before = {i: client.serial(i) for i in ids}
    sweeps = len(log_events(reconciler, "reconcile.sweep_started"))

    def issued_by_reconciler(cert_id: str) -> int:
        return sum(1 for e in log_events(reconciler, "reconcile.certificate")
                   if e.get("certificate") == cert_id and e.get("outcome") == "issued")

    earlier = {i: issued_by_reconciler(i) for i in ids}
    apis = [p for p in stack.procs if p.name.startswith("api") and p.members()]

    answered = client.renew_all(ids)
    kill(apis)
    assert time.monotonic() - answered < KILL_WITHIN, "killed too late: nothing was tested"
    reap(apis)
    unchanged = [i for i in ids if client.serial(i) == before[i]]
    assert unchanged, "every renewal finished before the kill: nothing was tested"
    start_api(stack, 4)

    poll("the reconciler to carry out every renewal",
         lambda: all(client.serial(i) != before[i] for i in ids), WAIT_FOR_RECOVERY, 2.0)
    assert len(log_events(reconciler, "reconcile.sweep_started")) == sweeps
    assert all(issued_by_reconciler(i) > earlier[i] for i in unchanged)
    for cert_id in ids:
        client.assert_consistent(cert_id)
