"""A mass replacement survives the death of the API that started it.

A dedicated stack (its own OpenBao, Pebble, gunicorn and a reconciler ticking every
2 s, as ``test_durable_requests``). A replacement with ``revoke_old`` is answered 202,
then within half a second the API's gunicorn gets SIGKILL: its queued issuances and the
thread that followed the operation are gone, only the records in Vault remain. A fresh
API is started (it answers Pebble's http-01 challenges, and knows nothing of the
operation); the reconciler alone issues every certificate (the renewal requests'
trigger), revokes each old one and marks the operation done.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from devstack import Stack
from tests.integration.test_durable_requests import (durable_stack, Client, kill, poll, reap,
                                                      start_api, start_reconciler)
from tests.support.stack import log_events

pytestmark = pytest.mark.integration

COUNT = 6
KILL_WITHIN = 0.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with durable_stack(tmp_path_factory.mktemp("replacement-crash-stack")) as running:
        yield running


def pebble_status(stack: Stack, serial: str) -> str:
    assert stack.ca_bundle is not None
    context = ssl.create_default_context(cafile=str(Path(stack.ca_bundle)))
    url = f"https://127.0.0.1:{stack.ports['pebble_mgmt']}/cert-status-by-serial/{serial}"
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        return str(json.loads(resp.read())["Status"])


def operation(client: Client, op_id: str) -> dict[str, Any]:
    doc = client.read(f"system/replacements/{op_id}")
    assert doc is not None
    return dict(json.loads(doc["json"]))


@pytest.mark.timeout(900)  # the killed API's leases must expire first
def test_a_replacement_whose_api_died_is_finished_by_the_reconciler(stack: Stack) -> None:
    client = Client(stack)
    reconciler = start_reconciler(stack, 1)
    answers = [client.declare(f"x{i}", 60) for i in range(COUNT)]
    for resp in answers:
        assert resp.status_code == 201, resp.text
    ids = [resp.json()["id"] for resp in answers]
    before = {i: client.serial(i) for i in ids}
    apis = [p for p in stack.procs if p.name.startswith("api") and p.members()]

    resp = client.call("POST", "/v1/replacements", json={
        "environment": "prod", "service": "durable", "issuer": "pebble",
        "revoke_old": True, "reason": "crash drill"})
    answered = time.monotonic()
    kill(apis)
    assert resp.status_code == 202, resp.text
    assert time.monotonic() - answered < KILL_WITHIN, "killed too late: nothing was tested"
    reap(apis)
    op_id = resp.json()["id"]
    assert resp.json()["selected"] == COUNT
    assert operation(client, op_id)["state"] == "running"
    unchanged = [i for i in ids if client.serial(i) == before[i]]
    assert unchanged, "every renewal finished before the kill: nothing was tested"
    start_api(stack, 2)

    poll("the reconciler to finish the replacement",
         lambda: operation(client, op_id)["state"] == "done", 600, 2.0)
    for cert_id in ids:
        assert client.serial(cert_id) != before[cert_id], cert_id
        assert pebble_status(stack, before[cert_id] or "") == "Revoked", cert_id
        client.assert_consistent(cert_id)
    done = [e for e in log_events(reconciler, "replacement.done")
            if e.get("replacement") == op_id]
    assert done, "the reconciler, not the dead API, finished the operation"
