"""A team operator with the shipped example policy (policies/operator-team-payments.hcl)
sees and filters its own certificates, through the API and the CLI, on the real stack.

The policy grants ``list`` on ``metadata/specs/+/payments-*`` only, so Vault refuses a
listing of ``specs/`` (and of ``specs/prod/``): the team used to get a 403 for
``GET /v1/certificates`` and ``certlocker list``. Vault still decides: another team's
certificates never appear, and naming another team's service is a 403.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.stack import CertlockerStack

pytestmark = pytest.mark.integration

CERTLOCKER = str(Path(sys.executable).with_name("certlocker"))
TEAM_POLICY = "certlocker-operator-team-payments"


def call(stack: CertlockerStack, method: str, path: str, token: str,
         **kwargs: Any) -> requests.Response:
    return requests.request(method, stack.api_url + path, headers={"X-Vault-Token": token},
                            timeout=120, **kwargs)


def token_with(stack: CertlockerStack, *policies: str) -> str:
    made = stack.client(stack.root_token).auth.token.create(
        policies=list(policies), no_default_policy=not policies, ttl="1h")
    return str(made["auth"]["client_token"])


@pytest.fixture(scope="module")
def team(certlocker_stack: CertlockerStack) -> str:
    stack = certlocker_stack
    admin = stack.operator_token
    for env, service in (("prod", "payments-inv"), ("dev", "payments-inv"),
                         ("prod", "ledger-inv")):
        granted = call(stack, "PUT", f"/v1/grants/{env}/{service}", admin,
                       json={"zones": [f"{service}.{env}.test"]})
        assert granted.status_code == 200, granted.text
    team = token_with(stack, TEAM_POLICY)
    for env, name in (("prod", "web"), ("prod", "api"), ("dev", "web")):
        made = call(stack, "POST", "/v1/certificates?wait=0", team, json={
            "environment": env, "service": "payments-inv", "name": name,
            "dns_names": [f"{name}.payments-inv.{env}.test"]})
        assert made.status_code in (201, 202), made.text
    other = call(stack, "POST", "/v1/certificates?wait=0", admin, json={
        "environment": "prod", "service": "ledger-inv", "name": "web",
        "dns_names": ["web.ledger-inv.prod.test"]})
    assert other.status_code in (201, 202), other.text
    return team


def ids(resp: requests.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {i["id"] for i in resp.json()["items"]}


def test_a_team_lists_and_filters_its_own_certificates(certlocker_stack: CertlockerStack,
                                                       team: str) -> None:
    stack = certlocker_stack
    every = call(stack, "GET", "/v1/certificates", team)
    seen = ids(every)
    assert {"prod.payments-inv.web", "prod.payments-inv.api", "dev.payments-inv.web"} <= seen
    assert all(i.split(".")[1].startswith("payments-") for i in seen), seen
    assert every.json()["scope"] == "permitted"
    assert ids(call(stack, "GET", "/v1/certificates?environment=dev", team)) \
        >= {"dev.payments-inv.web"}
    assert "prod.payments-inv.web" not in ids(
        call(stack, "GET", "/v1/certificates?environment=dev", team))
    assert ids(call(stack, "GET", "/v1/certificates?environment=prod&service=payments-inv",
                    team)) == {"prod.payments-inv.web", "prod.payments-inv.api"}
    assert ids(call(stack, "GET", "/v1/certificates?q=API.payments", team)) \
        == {"prod.payments-inv.api"}
    paged = call(stack, "GET", "/v1/certificates?service=payments-inv&limit=2", team)
    assert len(paged.json()["items"]) == 2 and paged.json()["next_cursor"]
    rest = call(stack, "GET", "/v1/certificates?service=payments-inv&limit=2&cursor="
                + paged.json()["next_cursor"], team)
    assert ids(paged) | ids(rest) == {"prod.payments-inv.web", "prod.payments-inv.api",
                                      "dev.payments-inv.web"}

    # Vault still decides: naming another team's folder is refused, not emptied
    refused = call(stack, "GET", "/v1/certificates?environment=prod&service=ledger-inv", team)
    assert refused.status_code == 403, refused.text
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    # the administrator still lists the whole inventory
    admin = call(stack, "GET", "/v1/certificates?service=ledger-inv", stack.operator_token)
    assert ids(admin) == {"prod.ledger-inv.web"} and admin.json()["scope"] == "all"


def test_a_token_without_rights_lists_nothing_and_is_told_why(
        certlocker_stack: CertlockerStack, team: str) -> None:
    nobody = token_with(certlocker_stack, "default")
    resp = call(certlocker_stack, "GET", "/v1/certificates", nobody)
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"] == [] and resp.json()["scope"] == "permitted"


def test_certlocker_list_works_for_a_team(certlocker_stack: CertlockerStack,
                                          team: str) -> None:
    env = {**certlocker_stack.env, "VAULT_TOKEN": team}
    done = subprocess.run([CERTLOCKER, "--json", "list"], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    listed = {i["id"] for i in json.loads(done.stdout)["items"]}
    assert {"prod.payments-inv.web", "dev.payments-inv.web"} <= listed
    assert "prod.ledger-inv.web" not in listed
    table = subprocess.run([CERTLOCKER, "list", "--environment", "prod"], env=env,
                           capture_output=True, text=True, timeout=180)
    assert table.returncode == 0, table.stderr
    assert "prod.payments-inv.api" in table.stdout and "dev.payments" not in table.stdout
    assert "may list" in table.stderr  # says the listing is the team's part only
