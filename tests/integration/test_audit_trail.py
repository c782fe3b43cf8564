"""The audit trail end to end: operator actions through the API become events with the
operator's identity; auditors read them through GET /v1/audit and the CLI; an edit or a
deletion made with Vault's root token is caught by `certlocker audit verify`."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.audit_trail import lane_path, stored_events
from tests.support.observability import Api, running_observability_stack
from tests.support.secrets import jwts_in
from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

MOUNT = "certlocker"
CERT_ID = "prod.audit-web.www"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertlockerStack]:
    with running_observability_stack(tmp_path_factory.mktemp("audit")) as s:
        yield s


def token(stack: CertlockerStack, policy: str, display: str) -> str:
    resp = stack.client(stack.root_token).auth.token.create(
        policies=[policy], display_name=display, ttl="1h")
    return resp["auth"]["client_token"]


def cli(stack: CertlockerStack, *args: str, token: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = dict(stack.env)
    if token:
        env["VAULT_TOKEN"] = token
    binary = str(Path(sys.executable).with_name("certlocker"))
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def acted(stack: CertlockerStack) -> dict:
    """An operator declares, renews and verifies a certificate and mints a credential."""
    api = Api(stack.api_url, stack.operator_token)
    resp = api("POST", "/v1/certificates?wait=90", json={
        "environment": "prod", "service": "audit-web", "name": "www",
        "dns_names": ["www.audit-web.test"], "targets": ["127.0.0.1:9"]})
    assert resp.status_code == 201, resp.text
    assert api("POST", f"/v1/certificates/{CERT_ID}/renew?wait=90").status_code == 200
    assert api("POST", f"/v1/certificates/{CERT_ID}/verify").status_code == 200
    minted = api("POST", "/v1/services/prod/audit-web/credentials")
    assert minted.status_code == 201, minted.text
    operator = stack.client().auth.token.lookup_self()["data"]["display_name"]
    return {"operator": operator, "credential": minted.json()["token"]}


def events(stack: CertlockerStack, auditor: str, **params) -> list[dict]:
    resp = Api(stack.api_url, auditor)("GET", "/v1/audit", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def test_operator_actions_are_recorded_with_the_operators_identity(stack, acted) -> None:
    auditor = token(stack, "certlocker-auditor", "ann")
    mine = events(stack, auditor, certificate=CERT_ID, limit=1000)
    seen = {(e["actor"], e["action"], e["outcome"]) for e in mine}
    op = acted["operator"]
    assert (op, "spec.create", "success") in seen
    assert (op, "certificate.renew.requested", "success") in seen
    assert (op, "delivery.verify", "failure") in seen  # port 9 is closed: unreachable
    issues = [e for e in mine if e["action"] == "certificate.issue"]
    assert len(issues) == 2 and {e["actor"] for e in issues} == {"certlocker"}
    # The stack's reconciler also verifies targets on its schedule, as "reconciler".
    [verify] = [e for e in mine if e["action"] == "delivery.verify" and e["actor"] == op]
    assert verify["details"]["targets"] == [
        {"address": "127.0.0.1:9", "status": "unreachable", "served_sha256": None}]
    minted = events(stack, auditor, action="credential.mint", actor=op)
    assert minted and minted[0]["subject"].endswith("prod/audit-web")
    times = [dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in mine]
    assert times == sorted(times, reverse=True)  # newest first across the lanes
    for lane in {e["lane"] for e in mine}:
        seqs = [e["seq"] for e in mine if e["lane"] == lane]
        assert seqs == sorted(seqs, reverse=True)


def test_filters_limit_and_bad_input(stack, acted) -> None:
    auditor = token(stack, "certlocker-auditor", "ann")
    [newest] = events(stack, auditor, limit=1)
    assert events(stack, auditor, since=newest["time"], limit=1000)[-1]["time"] >= newest["time"]
    assert events(stack, auditor, until="2000-01-01T00:00:00Z") == []
    api = Api(stack.api_url, auditor)
    for params in ({"limit": "0"}, {"since": "yesterday"}, {"since": "2030-01-01"},
                   {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}):
        resp = api("GET", "/v1/audit", params=params)
        assert resp.status_code == 400, params
        assert resp.headers["Content-Type"].startswith("application/problem+json")


def test_only_tokens_that_may_read_the_audit_trail_get_it(stack, acted) -> None:
    team = token(stack, "certlocker-operator-team-payments", "payments-bob")
    resp = Api(stack.api_url, team)("GET", "/v1/audit")
    assert resp.status_code == 403
    assert resp.json()["type"].endswith("/access-denied")
    assert Api(stack.api_url, "nonsense")("GET", "/v1/audit").status_code == 401
    admin = events(stack, stack.operator_token, limit=5)  # operator-admin reads audit
    assert admin
    auditor = token(stack, "certlocker-auditor", "ann")
    denied = events(stack, auditor, action="audit.query", limit=5)
    assert denied[0]["actor"].endswith("payments-bob") and denied[0]["outcome"] == "denied"


def test_no_event_holds_key_material_or_a_token(stack, acted) -> None:
    auditor = token(stack, "certlocker-auditor", "ann")
    everything = json.dumps(events(stack, auditor, limit=1000))
    assert "PRIVATE KEY" not in everything
    assert jwts_in(everything) == []
    for secret in (stack.root_token, stack.operator_token, acted["credential"], auditor,
                   (stack.state_dir / "certlocker.token").read_text().strip()):
        assert secret not in everything


def test_cli_lists_events_for_an_auditor(stack, acted) -> None:
    auditor = token(stack, "certlocker-auditor", "ann")
    out = cli(stack, "audit", "list", "--certificate", CERT_ID, token=auditor)
    assert out.returncode == 0, out.stderr
    assert "spec.create" in out.stdout and acted["operator"] in out.stdout
    as_json = cli(stack, "--json", "audit", "list", "--action", "spec.create", token=auditor)
    assert json.loads(as_json.stdout)["items"][0]["action"] == "spec.create"
    team = token(stack, "certlocker-operator-team-payments", "payments-bob")
    assert cli(stack, "audit", "list", token=team).returncode == 1


def test_audit_verify_catches_an_event_rewritten_and_then_restored(stack, acted) -> None:
    """An event edited and then written back word for word hashes as before, but KV v2
    keeps the versions: an event is created once, so a version 3 is tampering."""
    auditor = token(stack, "certlocker-auditor", "ann")
    assert cli(stack, "audit", "verify", token=auditor).returncode == 0
    root = stack.client(stack.root_token).secrets.kv.v2
    victim = min(stored_events(stack.client(stack.root_token), MOUNT),
                 key=lambda e: (e["lane"], e["seq"]))
    path = lane_path(victim["lane"], victim["seq"])
    original = root.read_secret_version(path=path, mount_point=MOUNT,
                                        raise_on_deleted_version=True)["data"]["data"]
    forged = {**json.loads(original["json"]), "actor": "someone-else"}
    root.create_or_update_secret(path=path, secret={"json": json.dumps(forged)},
                                 mount_point=MOUNT)
    root.create_or_update_secret(path=path, secret=original, mount_point=MOUNT)
    try:
        restored = cli(stack, "--json", "audit", "verify", token=auditor)
        assert restored.returncode == 1, restored.stdout
        [broken] = [r for r in json.loads(restored.stdout)["lanes"] if not r["ok"]]
        assert (broken["lane"], broken["first_bad_seq"]) == (victim["lane"], victim["seq"])
        assert "version 3" in broken["problem"] and "rewritten" in broken["problem"]
    finally:  # back to one version for the tests after this one
        root.delete_metadata_and_all_versions(path=path, mount_point=MOUNT)
        root.create_or_update_secret(path=path, secret=original, cas=0, mount_point=MOUNT)
    assert cli(stack, "audit", "verify", token=auditor).returncode == 0


def test_audit_verify_catches_a_truncation_an_edit_and_a_deletion(stack, acted) -> None:
    # Nothing may append while we tamper: the reconciler verifies on its own schedule.
    next(p for p in stack.stack.procs if p.name == "reconciler").stop()
    auditor = token(stack, "certlocker-auditor", "ann")
    intact = cli(stack, "--json", "audit", "verify", token=auditor)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    report = json.loads(intact.stdout)
    stored = stored_events(stack.client(stack.root_token), MOUNT)
    assert report["ok"] and report["checked"] == len(stored) >= 6
    newest: dict[int, dict] = {}
    for e in stored:
        if e["seq"] > newest.get(e["lane"], {"seq": 0})["seq"]:
            newest[e["lane"]] = e
    heads = {lane["lane"]: lane["head"] for lane in report["lanes"]}
    assert heads == {n: {"seq": e["seq"], "hash": e["hash"]} for n, e in newest.items()}
    # The busiest lane has at least 3 events: the acted fixture alone wrote 6, and the
    # stack has two API workers and the reconciler.
    lane = max(heads, key=lambda n: heads[n]["seq"])
    head = heads[lane]["seq"]
    assert head >= 3
    anchor = f"{lane}:{head}:{heads[lane]['hash']}"
    root = stack.client(stack.root_token).secrets.kv.v2

    # Drop the lane's newest event: the lane still verifies on its own, the anchor
    # kept from the earlier run catches it.
    root.delete_metadata_and_all_versions(path=lane_path(lane, head), mount_point=MOUNT)
    assert cli(stack, "audit", "verify", token=auditor).returncode == 0
    truncated = cli(stack, "--json", "audit", "verify", "--anchor", anchor, token=auditor)
    assert truncated.returncode == 1
    [broken] = [r for r in json.loads(truncated.stdout)["lanes"] if not r["ok"]]
    assert broken["lane"] == lane and "truncated" in broken["problem"]

    path = lane_path(lane, 2)
    event = json.loads(root.read_secret_version(path=path, mount_point=MOUNT,
                                                raise_on_deleted_version=True)
                       ["data"]["data"]["json"])
    event["actor"] = "someone-else"
    root.create_or_update_secret(path=path, secret={"json": json.dumps(event)},
                                 mount_point=MOUNT)
    edited = cli(stack, "audit", "verify", token=auditor)
    assert edited.returncode == 1
    assert f"lane {lane}: BROKEN at seq 2" in edited.stdout and "edited" in edited.stdout

    root.delete_metadata_and_all_versions(path=lane_path(lane, 1), mount_point=MOUNT)
    gone = cli(stack, "--json", "audit", "verify", token=auditor)
    assert gone.returncode == 1
    [broken] = [r for r in json.loads(gone.stdout)["lanes"] if not r["ok"]]
    assert broken["lane"] == lane and broken["first_bad_seq"] == 1

    env_cli = subprocess.run(
        [str(Path(sys.executable).with_name("certlocker")), "audit", "verify"],
        env={**stack.env, "VAULT_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": auditor},
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert env_cli.returncode == 3
