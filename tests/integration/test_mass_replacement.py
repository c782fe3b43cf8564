"""Mass replacement on the real stack (OpenBao, Pebble, the certlocker API and
reconciler, a real nginx serving two of the certificates).

Five certificates are declared; two have a target that nginx serves. A replacement
selected by issuer (within one service folder, so the session's other certificates are
left alone) with ``revoke_old`` is started: the answer is 202 with a Location, every
certificate gets a new serial, the two served ones count as verified only once nginx
serves the new certificate (this test plays the delivery agent: it copies each new
bundle from Vault into nginx and reloads), each old certificate is revoked at Pebble, the
operation ends ``done``, and the audit trail has the start, each certificate's renewal
request tagged with the operation, each revocation, and the end.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from certlocker.cli import main as cli
from tests.support.audit_trail import stored_events
from tests.support.nginx_pool import NginxPool, Site, free_port

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
SERVICE = "rpl"
COUNT = 5
SERVED = 2  # of them with a target nginx serves
DONE_WITHIN = 300.0


def api(stack: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{stack.api_url}{path}", timeout=120,
                            headers={"X-Vault-Token": stack.operator_token}, **kwargs)


def issued(stack: Any, service: str, name: str,
           targets: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Declare ``<name>.<service>.test`` in prod and wait for it: the certificate's view."""
    resp = api(stack, "POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": service, "name": name,
        "dns_names": [f"{name}.{service}.test"], "targets": targets or []})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def pebble_status(stack: Any, serial: str) -> str:
    context = ssl.create_default_context(cafile=str(stack.ca_bundle))
    url = f"{stack.env['PEBBLE_MGMT_URL']}/cert-status-by-serial/{serial}"
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        return str(json.loads(resp.read())["Status"])


def bundle(stack: Any, cert_id: str) -> dict[str, str]:
    """What a delivery agent reads from Vault (here with the root token)."""
    root = stack.client(stack.root_token)
    return root.secrets.kv.v2.read_secret_version(
        path="certs/" + cert_id.replace(".", "/"), mount_point=MOUNT,
        raise_on_deleted_version=True)["data"]["data"]


def test_a_replacement_by_issuer_replaces_delivers_verifies_and_revokes(
        certlocker_stack: Any, tmp_path: Path) -> None:
    stack = certlocker_stack
    ports = [free_port() for _ in range(SERVED)]
    ids, before = [], {}
    for i in range(COUNT):
        name = f"r{i}"
        targets = ([{"address": f"127.0.0.1:{ports[i]}", "sni": f"{name}.{SERVICE}.test"}]
                   if i < SERVED else [])
        view = issued(stack, SERVICE, name, targets)
        ids.append(view["id"])
        before[view["id"]] = view["current"]["serial"]

    served = ids[:SERVED]
    with NginxPool(tmp_path / "nginx") as nginx:
        sites: dict[str, tuple[Site, str]] = {}

        def deploy(cert_id: str) -> None:
            """The delivery agent's job: the bundle in Vault, served by nginx."""
            found = bundle(stack, cert_id)
            known = sites.get(cert_id)
            if known is not None and known[1] == found["serial"]:
                return
            pem, key = found["fullchain"].encode(), found["private_key"].encode()
            if known is None:
                site = nginx.add("127.0.0.1", ports[served.index(cert_id)], pem, key)
            else:
                site = nginx.replace(known[0], pem, key)
            sites[cert_id] = (site, found["serial"])

        for cert_id in served:
            deploy(cert_id)
        nginx.stop()
        nginx.start()

        # A bad selector and one that selects nothing are problems, and start nothing.
        bad = api(stack, "POST", "/v1/replacements", json={"issuer": "no-such-issuer"})
        assert bad.status_code == 400, bad.text
        assert bad.headers["Content-Type"].startswith("application/problem+json")
        assert bad.json()["field"] == "issuer"
        empty = api(stack, "POST", "/v1/replacements", json={
            "issuer": "pebble", "environment": "prod", "service": SERVICE,
            "names": "*.nowhere.test"})
        assert empty.status_code == 422, empty.text
        assert empty.json()["type"].endswith("/empty-selection")

        started = api(stack, "POST", "/v1/replacements", json={
            "issuer": "pebble", "environment": "prod", "service": SERVICE,
            "revoke_old": True, "reason": "CA incident drill"})
        assert started.status_code == 202, started.text
        op = started.json()
        assert op["selected"] == COUNT and op["state"] == "running"
        assert started.headers["Location"].endswith(f"/v1/replacements/{op['id']}")

        deadline = time.monotonic() + DONE_WITHIN
        while True:
            for cert_id in served:
                deploy(cert_id)
            nginx.reload()
            shown = api(stack, "GET", f"/v1/replacements/{op['id']}")
            assert shown.status_code == 200, shown.text
            progress = shown.json()
            if progress["state"] == "done" or time.monotonic() > deadline:
                break
            time.sleep(1.0)

    assert progress["state"] == "done", progress
    assert progress["counts"]["revoked"] == COUNT, progress
    assert progress["finished"] == COUNT and progress["eta_seconds"] == 0
    items = {i["id"]: i for i in progress["items"]}
    assert set(items) == set(ids)
    for cert_id in ids:
        now = api(stack, "GET", f"/v1/certificates/{cert_id}").json()
        assert now["current"]["serial"] != before[cert_id]
        assert items[cert_id]["old_serial"] == before[cert_id]
        assert items[cert_id]["serial"] == now["current"]["serial"]
        assert pebble_status(stack, before[cert_id]) == "Revoked", cert_id
        assert pebble_status(stack, now["current"]["serial"]) == "Valid", cert_id
    for cert_id in served:  # every node was seen serving the new one before the revoke
        now = api(stack, "GET", f"/v1/certificates/{cert_id}").json()
        assert [t["status"] for t in now["targets"]] == ["ok"], now["targets"]
        assert now["targets"][0]["served_sha256"] == now["current"]["sha256_fingerprint"]

    listed = api(stack, "GET", "/v1/replacements")
    assert op["id"] in [o["id"] for o in listed.json()["items"]]

    events = stored_events(stack.client(stack.root_token), MOUNT)
    start = [e for e in events if e["action"] == "replacement.start"
             and e["subject"] == op["id"]]
    assert len(start) == 1 and start[0]["details"]["count"] == COUNT
    assert start[0]["details"]["selector"]["issuer"] == "pebble"
    tagged = {e["subject"] for e in events if e["action"] == "certificate.renew.requested"
              and op["id"] in e["actor"]}
    assert tagged == set(ids)
    revoked = {e["subject"] for e in events if e["action"] == "certificate.revoke"
               and (e.get("details") or {}).get("replacement") == op["id"]
               and e["outcome"] == "success"}
    assert revoked == set(ids)
    assert [e["subject"] for e in events if e["action"] == "replacement.done"].count(
        op["id"]) == 1

    # The CLI shows the same operation.
    runner = CliRunner()
    env = {"CERTLOCKER_URL": stack.api_url, "VAULT_TOKEN": stack.operator_token}
    result = runner.invoke(cli, ["--json", "replace", "status", op["id"]], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "done"


def test_the_cli_starts_a_replacement_and_follows_it_to_the_end(
        certlocker_stack: Any) -> None:
    stack = certlocker_stack
    old = issued(stack, "rplcli", "one")["current"]["serial"]
    # The issuing intermediate's SHA-256 is recorded at issuance and selects by itself.
    root = stack.client(stack.root_token)
    status = root.secrets.kv.v2.read_secret_version(
        path="status/prod/rplcli/one", mount_point=MOUNT,
        raise_on_deleted_version=True)["data"]["data"]
    intermediate = status["current"]["issuer_sha256"]
    assert len(intermediate) == 64
    runner = CliRunner()
    env = {"CERTLOCKER_URL": stack.api_url, "VAULT_TOKEN": stack.operator_token}
    result = runner.invoke(cli, ["--json", "replace", "--environment", "prod",
                                 "--service", "rplcli", "--intermediate", intermediate,
                                 "--poll", "0.5", "--timeout", "180"], env=env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["state"] == "done" and body["counts"]["verified"] == 1
    now = api(stack, "GET", "/v1/certificates/prod.rplcli.one").json()
    assert now["current"]["serial"] != old
    assert pebble_status(stack, old) == "Valid"  # no --revoke-old: the old one stands
    # The dashboard lists the operation with its progress for the operator.
    session = requests.Session()
    signed_in = session.post(stack.api_url + "/login", data={"token": stack.operator_token},
                             timeout=30, allow_redirects=False)
    assert signed_in.status_code == 303
    page = session.get(stack.api_url + "/", timeout=60)
    assert page.status_code == 200
    section = page.text.split('<section id="replacements">', 1)[1].split("</section>", 1)[0]
    assert body["id"][:12] in section and ">done<" in section


def child_token(stack: Any, policy: str) -> str:
    root = stack.client(stack.root_token)
    answer = root.auth.token.create(policies=[policy], ttl="1h", display_name=policy)
    return str(answer["auth"]["client_token"])


@pytest.mark.parametrize("body", [
    {"all": True, "extra": 1}, {"serials": [1, 2]}, {"names": ["*"]}, {"all": "yes"},
    {"environment": "prod", "service": "x" * 65}, {"issuing_intermediate": ""},
    {"all": True, "revocation_reason": "certificateHold"}, {"reason": "x" * 501, "all": True},
])
def test_malformed_requests_are_problems_and_start_nothing(certlocker_stack: Any,
                                                           body: dict[str, Any]) -> None:
    before = api(certlocker_stack, "GET", "/v1/replacements").json()["items"]
    resp = api(certlocker_stack, "POST", "/v1/replacements", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    after = api(certlocker_stack, "GET", "/v1/replacements").json()["items"]
    assert len(after) == len(before)


def test_only_a_caller_who_may_renew_every_selected_one_starts_or_sees_one(
        certlocker_stack: Any) -> None:
    stack = certlocker_stack
    serial = issued(stack, "rplacl", "one")["current"]["serial"]
    auditor = child_token(stack, "certlocker-auditor")
    selector = {"environment": "prod", "service": "rplacl", "all": None,
                "names": "*.rplacl.test"}
    selector = {k: v for k, v in selector.items() if v is not None}
    denied = requests.post(f"{stack.api_url}/v1/replacements", json=selector, timeout=60,
                           headers={"X-Vault-Token": auditor})
    assert denied.status_code == 403, denied.text
    assert denied.headers["Content-Type"].startswith("application/problem+json")
    assert api(stack, "GET", "/v1/certificates/prod.rplacl.one").json()[
        "current"]["serial"] == serial
    assert api(stack, "GET", "/v1/certificates/prod.rplacl.one").json()[
        "renewal_request"] is None
    nobody = requests.post(f"{stack.api_url}/v1/replacements", json=selector, timeout=60)
    assert nobody.status_code == 401, nobody.text
    missing = api(stack, "GET", "/v1/replacements/" + "0" * 32)
    assert missing.status_code == 404, missing.text
    garbage = api(stack, "GET", "/v1/replacements/..%2F..%2Fsecrets")
    assert garbage.status_code == 404, garbage.text

    started = api(stack, "POST", "/v1/replacements", json=selector)
    assert started.status_code == 202, started.text
    team = child_token(stack, "certlocker-operator-team-payments")
    hidden = requests.get(f"{stack.api_url}/v1/replacements/{started.json()['id']}",
                          headers={"X-Vault-Token": team}, timeout=60)
    assert hidden.status_code == 404, hidden.text
    listed = requests.get(f"{stack.api_url}/v1/replacements",
                          headers={"X-Vault-Token": team}, timeout=60).json()["items"]
    assert started.json()["id"] not in [o["id"] for o in listed]
