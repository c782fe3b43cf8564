"""Name ownership and the one spec parser, on every path in: the API, the Vault CLI and
the reconciler, over the shared real stack (OpenBao with the shipped policies, Pebble).

- a team operator with the shipped example policy cannot obtain another team's name, not
  through the API (403 naming the names) and not by writing the spec with the Vault CLI
  (the reconciler refuses it before any order: its status says refused);
- a name held by another service is refused until an administrator shares it;
- grants are read and written through the API with the caller's own token;
- a malformed spec written with the Vault CLI never breaks a listing and is never ordered:
  its certificate reads `invalid` with the reason, and a fixed spec is issued.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.stack import CertlockerStack, devstack

pytestmark = pytest.mark.integration

BAO = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bao"
MOUNT = "certlocker"
TEAM_POLICY = "certlocker-operator-team-payments"


def call(stack: CertlockerStack, method: str, path: str, token: str | None = None,
         **kwargs: Any) -> requests.Response:
    return requests.request(method, stack.api_url + path,
                            headers={"X-Vault-Token": token or stack.operator_token},
                            timeout=120, **kwargs)


def declare(stack: CertlockerStack, token: str, service: str, name: str,
            dns_names: list[str], wait: float = 60) -> requests.Response:
    return call(stack, "POST", f"/v1/certificates?wait={wait:g}", token, json={
        "environment": "prod", "service": service, "name": name, "dns_names": dns_names})


def team_token(stack: CertlockerStack) -> str:
    made = stack.client(stack.root_token).auth.token.create(
        policies=[TEAM_POLICY], no_default_policy=False, ttl="1h")
    return str(made["auth"]["client_token"])


def bao(stack: CertlockerStack, token: str, *args: str, stdin: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """The real Vault CLI, as an operator would type it."""
    return subprocess.run([str(BAO), *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env={"VAULT_ADDR": stack.vault_addr, "BAO_ADDR":
                                           stack.vault_addr, "VAULT_TOKEN": token,
                                           "BAO_TOKEN": token, "PATH": "/usr/bin:/bin",
                                           "HOME": str(stack.state_dir)})


def reconcile_once(stack: CertlockerStack) -> None:
    done = subprocess.run([devstack.certlocker_binary(), "reconcile", "--once"],
                          env=stack.stack.service_env(), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]


def pebble_saw(stack: CertlockerStack, name: str) -> bool:
    """Did any order or authorization for ``name`` reach the CA? (Pebble logs both.)"""
    return name in (stack.state_dir / "pebble.log").read_text()


def problem(resp: requests.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    return resp.json()


# -- the attack: another team's name ----------------------------------------------------


def test_a_team_cannot_obtain_another_teams_name_through_the_api(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    victim = "www.shop-api.prod.test"
    owned = declare(stack, stack.operator_token, "shop-api", "www", [victim])
    assert owned.status_code == 201, owned.text  # an administrator's declaration grants it
    team = team_token(stack)

    doc = problem(declare(stack, team, "payments-evil", "steal", [victim]), 403)
    assert doc["type"].endswith("/names-not-granted")
    assert doc["refused"] == [{"name": victim, "reason": "not-granted",
                               "detail": f"{victim} is not granted to service payments-evil"}]
    assert call(stack, "GET", "/v1/certificates/prod.payments-evil.steal").status_code == 404
    # a team may not grant itself the name either
    problem(call(stack, "PUT", "/v1/grants/prod/payments-evil", team,
                 json={"dns_names": [victim]}), 403)


def test_a_spec_written_with_the_vault_cli_cannot_bypass_name_ownership(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    victim = "login.shop-api.prod.test"
    assert declare(stack, stack.operator_token, "shop-api", "login",
                   [victim]).status_code == 201
    team = team_token(stack)
    spec = json.dumps({"dns_names": [victim, "evil-only.payments.test"]})
    wrote = bao(stack, team, "kv", "put", f"-mount={MOUNT}", "specs/prod/payments-evil/cli",
                "-", stdin=spec)
    assert wrote.returncode == 0, wrote.stderr  # the team policy lets it write the spec
    reconcile_once(stack)

    shown = call(stack, "GET", "/v1/certificates/prod.payments-evil.cli")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["status"] == "refused"
    assert f"{victim} is not granted to service payments-evil" in body["last_error"]
    assert body["current"] is None
    assert pebble_saw(stack, victim)  # Pebble logs the names it is asked for ...
    assert not pebble_saw(stack, "evil-only.payments.test")  # ... and never saw this one
    refused = call(stack, "GET", "/v1/certificates?status=refused&environment=prod")
    assert "prod.payments-evil.cli" in [i["id"] for i in refused.json()["items"]]


def test_a_name_held_by_another_service_needs_an_administrators_share(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    held = "pay.shared.prod.test"
    assert declare(stack, stack.operator_token, "checkout", "pay", [held]).status_code == 201
    granted = call(stack, "PUT", "/v1/grants/prod/payments-two",
                   json={"zones": ["shared.prod.test"]})
    assert granted.status_code == 200, granted.text
    team = team_token(stack)
    # the zone covers its own names, not the one checkout holds
    assert declare(stack, team, "payments-two", "own",
                   ["own.shared.prod.test"]).status_code == 201
    doc = problem(declare(stack, team, "payments-two", "pay", [held]), 403)
    assert doc["refused"][0]["reason"] == "held-by-another-service"
    assert "held by service checkout" in doc["refused"][0]["detail"]

    shared = call(stack, "PUT", "/v1/grants/prod/payments-two",
                  json={"zones": ["shared.prod.test"], "shared": [held]})
    assert shared.status_code == 200, shared.text
    ok = declare(stack, team, "payments-two", "pay", [held])
    assert ok.status_code == 201, ok.text
    assert ok.json()["status"] == "valid"


def test_grants_through_the_api_with_the_callers_token(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    put = call(stack, "PUT", "/v1/grants/prod/payments-web",
               json={"dns_names": ["www.payments.test", "*.payments.test"],
                     "zones": ["api.payments.test"]})
    assert put.status_code == 200, put.text
    assert put.json()["dns_names"] == ["www.payments.test", "*.payments.test"]
    team = team_token(stack)
    own = call(stack, "GET", "/v1/grants/prod/payments-web", team)
    assert own.status_code == 200 and own.json()["zones"] == ["api.payments.test"]
    assert own.json()["vault"]["path"] == f"{MOUNT}/data/grants/prod/payments-web"
    problem(call(stack, "GET", "/v1/grants/prod/shop-api", team), 403)
    # the Vault CLI sees the same record, plain fields
    read = bao(stack, stack.root_token, "kv", "get", f"-mount={MOUNT}", "-format=json",
               "grants/prod/payments-web")
    assert json.loads(read.stdout)["data"]["data"]["zones"] == ["api.payments.test"]
    doc = problem(call(stack, "PUT", "/v1/grants/prod/payments-web",
                       json={"dns_names": "www.payments.test"}), 400)
    assert doc["field"] == "dns_names"
    problem(call(stack, "PUT", "/v1/grants/prod/payments-web",
                 json={"dns_names": ["bad name"]}), 400)
    problem(call(stack, "GET", "/v1/grants/nowhere/payments-web"), 400)


# -- one parser: specs written with the Vault CLI ---------------------------------------


def test_a_malformed_vault_cli_spec_is_reported_on_its_certificate_and_never_ordered(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    # the report's reproduction: a string where a list belongs
    wrote = bao(stack, stack.root_token, "kv", "put", f"-mount={MOUNT}",
                "specs/prod/cli2/www", "dns_names=www.cli2.test")
    assert wrote.returncode == 0, wrote.stderr

    listing = call(stack, "GET", "/v1/certificates?environment=prod&service=cli2")
    assert listing.status_code == 200, listing.text
    [item] = listing.json()["items"]
    assert item["status"] == "invalid"
    assert "dns_names: must be a list of DNS names" in item["last_error"]
    assert call(stack, "GET", "/v1/certificates?environment=prod").status_code == 200
    cli = subprocess.run([devstack.certlocker_binary(), "list"], env=dict(stack.env),
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "prod.cli2.www" in cli.stdout

    reconcile_once(stack)
    stored = stack.client(stack.root_token).secrets.kv.v2.read_secret_version(
        mount_point=MOUNT, path="status/prod/cli2/www",
        raise_on_deleted_version=True)["data"]["data"]
    assert stored["state"] == "invalid" and "must be a list" in stored["last_error"]
    assert not pebble_saw(stack, "www.cli2.test")

    # fixed as the docs say (JSON, no issuer: the default one), and granted: issued
    grant = bao(stack, stack.root_token, "kv", "put", f"-mount={MOUNT}", "grants/prod/cli2",
                "-", stdin=json.dumps({"dns_names": ["www.cli2.test"]}))
    assert grant.returncode == 0, grant.stderr
    fixed = bao(stack, stack.root_token, "kv", "put", f"-mount={MOUNT}",
                "specs/prod/cli2/www", "-", stdin=json.dumps({"dns_names": ["www.cli2.test"]}))
    assert fixed.returncode == 0, fixed.stderr
    reconcile_once(stack)
    issued = call(stack, "GET", "/v1/certificates/prod.cli2.www").json()
    assert issued["status"] == "valid", issued
    assert issued["dns_names"] == ["www.cli2.test"] and issued["issuer"] == "pebble"
    assert pebble_saw(stack, "www.cli2.test")


@pytest.mark.parametrize("record, reason", [
    ({"dns_names": ["ok.cli3.test"], "issuer": "nowhere"}, "issuer: must be one of"),
    ({"dns_names": ["ok.cli3.test"], "key_type": "dsa"}, "key_type: must be one of"),
    ({"dns_names": ["ok.cli3.test"], "service": "other"}, "service: is 'other'"),
    ({"dns_names": []}, "dns_names: must be a non-empty list"),
    ({"dns_names": ["ok.cli3.test"], "targets": "127.0.0.1:443"}, "targets: must be a list"),
    ({"dns_names": ["ok.cli3.test"], "renew_before": "99999999999999999999d"},
     "renew_before"),
    ({"dns_names": ["ok.cli3.test"], "colour": "blue"}, "colour: is not a known field"),
])
def test_every_malformed_record_reads_invalid_and_the_rest_lists(
        certlocker_stack: CertlockerStack, record: dict[str, Any], reason: str) -> None:
    stack = certlocker_stack
    name = "r" + str(abs(hash(json.dumps(record, sort_keys=True))) % 10**8)
    stack.client(stack.root_token).secrets.kv.v2.create_or_update_secret(
        mount_point=MOUNT, path=f"specs/prod/cli3/{name}", secret=record)
    shown = call(stack, "GET", f"/v1/certificates/prod.cli3.{name}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "invalid"
    assert reason in shown.json()["last_error"]
    listing = call(stack, "GET", "/v1/certificates?environment=prod&limit=500")
    assert listing.status_code == 200, listing.text


def test_bootstrap_grants_the_names_certificates_already_carry_on_upgrade(
        certlocker_stack: CertlockerStack) -> None:
    """A certificate issued before name ownership keeps renewing after the upgrade's
    `certlocker bootstrap vault`; a spec that was only written gains nothing."""
    stack = certlocker_stack
    root = stack.client(stack.root_token).secrets.kv.v2
    root.create_or_update_secret(mount_point=MOUNT, path="specs/prod/legacy/www",
                                 secret={"dns_names": ["www.legacy.prod.test"]})
    root.create_or_update_secret(mount_point=MOUNT, path="status/prod/legacy/www", secret={
        "state": "valid", "current": {
            "serial": "01", "not_before": "2026-01-01T00:00:00Z",
            "not_after": "2027-01-01T00:00:00Z", "sha256_fingerprint": "00" * 32,
            "issuer": "CN=old", "dns_names": ["www.legacy.prod.test"]}})
    root.create_or_update_secret(mount_point=MOUNT, path="specs/prod/legacy-new/www",
                                 secret={"dns_names": ["www.legacy-new.prod.test"]})
    done = subprocess.run([devstack.certlocker_binary(), "bootstrap", "vault"],
                          env=stack.stack.admin_env(), capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("changed ") and "name grants" in line
               for line in done.stdout.splitlines()), done.stdout + done.stderr
    legacy = call(stack, "GET", "/v1/grants/prod/legacy").json()
    assert legacy["dns_names"] == ["www.legacy.prod.test"]
    assert call(stack, "GET", "/v1/grants/prod/legacy-new").json()["version"] == 0


def test_grants_from_the_cli(certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    team = team_token(stack)

    def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**stack.env, **({"VAULT_TOKEN": token} if token else {})}
        return subprocess.run([devstack.certlocker_binary(), *args], env=env,
                              capture_output=True, text=True, timeout=60)

    request = ("request", "prod", "payments-cli", "www", "--dns", "www.cli.pay.test")
    refused = cli(*request, token=team)
    assert refused.returncode != 0
    assert "www.cli.pay.test is not granted to service payments-cli" in refused.stderr
    denied = cli("grants", "add", "prod", "payments-cli", "--zone", "cli.pay.test",
                 token=team)
    assert denied.returncode != 0
    added = cli("grants", "add", "prod", "payments-cli", "--zone", "cli.pay.test")
    assert added.returncode == 0, added.stderr
    assert "zones      cli.pay.test" in added.stdout
    shown = cli("--json", "grants", "show", "prod", "payments-cli", token=team)
    assert json.loads(shown.stdout)["zones"] == ["cli.pay.test"]
    assert cli(*request, token=team).returncode == 0


def test_a_retired_certificate_lets_go_of_its_names(
        certlocker_stack: CertlockerStack) -> None:
    stack = certlocker_stack
    name = "moved.prod.test"
    assert declare(stack, stack.operator_token, "old-owner", "www", [name]).status_code == 201
    granted = call(stack, "PUT", "/v1/grants/prod/payments-new", json={"dns_names": [name]})
    assert granted.status_code == 200, granted.text
    team = team_token(stack)
    held = problem(declare(stack, team, "payments-new", "www", [name]), 403)
    assert held["refused"][0]["reason"] == "held-by-another-service"

    retired = call(stack, "DELETE", "/v1/certificates/prod.old-owner.www?revoke=false")
    assert retired.status_code in (200, 202), retired.text
    devstack.wait_until(lambda: call(stack, "GET", "/v1/certificates/prod.old-owner.www")
                        .json().get("retirement", {}).get("phase") in ("verifying", "done"),
                        60, what="the retirement to pass its destroying step")
    moved = declare(stack, team, "payments-new", "www", [name])
    assert moved.status_code == 201, moved.text
