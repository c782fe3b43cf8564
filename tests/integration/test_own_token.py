"""certlocker's own Vault token: refused, and rotated.

A second API (real gunicorn) beside the shared stack, with a token file of its own. A
token revoked with root is the deployment's fault and said as such: /readyz says not
ready and every request that needs certlocker's token answers 503 naming that token,
never a 403 that would blame the caller. A token file rotated under the running API (as
``bootstrap vault`` or a Vault Agent sink does) is picked up without a restart.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest
import requests

from tests.support.stack import CertlockerStack, devstack, free_port

pytestmark = pytest.mark.integration


class OwnApi(NamedTuple):
    url: str
    token: str
    token_file: Path
    proc: devstack.Proc


def new_token(certlocker_stack: CertlockerStack, period: str = "1h") -> str:
    root = certlocker_stack.client(certlocker_stack.root_token)
    return str(root.auth.token.create_orphan(
        policies=["certlocker"], no_default_policy=True, period=period,
        display_name="revocable")["auth"]["client_token"])


def revoke(certlocker_stack: CertlockerStack, token: str) -> None:
    certlocker_stack.client(certlocker_stack.root_token).auth.token.revoke(token)


@contextmanager
def api_with_token(certlocker_stack: CertlockerStack, token: str, name: str,
                   workers: int = 2) -> Iterator[OwnApi]:
    """A gunicorn API beside the shared stack whose token file holds ``token``."""
    stack = certlocker_stack.stack
    token_file = stack.state_dir / f"{name}.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    proc = devstack.spawn_api(
        name, port, stack.state_dir / f"{name}.log",
        {**stack.service_env(), "CERTLOCKER_VAULT_TOKEN_FILE": str(token_file)},
        workers=workers, threads=4)
    try:
        url = f"http://127.0.0.1:{port}"
        devstack.wait_http(f"{url}/readyz", 60, proc=proc)
        yield OwnApi(url, token, token_file, proc)
    finally:
        proc.stop()


@pytest.fixture
def own_api(certlocker_stack: CertlockerStack) -> Iterator[OwnApi]:
    with api_with_token(certlocker_stack, new_token(certlocker_stack), "api-own-token") as api:
        yield api


def test_a_revoked_own_token_is_not_ready_and_answers_503_not_403(
        certlocker_stack: CertlockerStack, own_api: OwnApi) -> None:
    url, token, _, proc = own_api
    operator = {"X-Vault-Token": certlocker_stack.operator_token}
    mint = f"{url}/v1/services/dev/own-token/credentials"
    assert requests.post(mint, headers=operator, timeout=30).status_code == 201

    revoke(certlocker_stack, token)

    ready = requests.get(f"{url}/readyz", timeout=30)
    assert (ready.status_code, ready.json()) == (503, {"status": "vault-token-invalid"})
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    refused = [
        # Several: each gunicorn worker answers some, including one that never read the
        # dashboard's session secret from Vault before the token died.
        *(requests.post(mint, headers=operator, timeout=30) for _ in range(8)),
        requests.post(f"{url}/v1/certificates", headers=operator, timeout=30, json={
            "environment": "dev", "service": "own-token", "name": "www",
            "dns_names": ["www.own-token.test"]}),
        requests.get(f"{url}/.well-known/jwks.json", timeout=30),
    ]
    for resp in refused:
        assert resp.status_code == 503, (resp.request.url, resp.text)
        assert resp.headers["Content-Type"] == "application/problem+json"
        problem = resp.json()
        assert problem["type"].endswith("/vault-token-refused"), problem
        assert "certlocker's own token" in problem["detail"], problem
    # The stack's own API, whose token is fine, still serves the same operator.
    assert requests.post(f"{certlocker_stack.api_url}/v1/services/dev/own-token/credentials",
                         headers=operator, timeout=30).status_code == 201
    assert token not in proc.log_path.read_text()


def test_a_rotated_token_file_is_picked_up_without_a_restart(
        certlocker_stack: CertlockerStack) -> None:
    # One worker: once it answers /readyz it has read the old token (a second worker
    # still booting would read the rotated file at start and have nothing to follow).
    with api_with_token(certlocker_stack, new_token(certlocker_stack), "api-rotated",
                        workers=1) as api:
        url, old, token_file, proc = api
        operator = {"X-Vault-Token": certlocker_stack.operator_token}
        mint = f"{url}/v1/services/dev/own-token/credentials"
        pid_before = proc.pid
        new = new_token(certlocker_stack)
        staged = token_file.with_suffix(".new")
        staged.write_text(new + "\n")
        os.replace(staged, token_file)  # as a Vault Agent sink writes it
        revoke(certlocker_stack, old)
        # The worker follows the file within a second of its next request; the old
        # token is dead, so a request that still carried it would answer 503.
        deadline = time.monotonic() + 10
        answers: list[Any] = []
        while time.monotonic() < deadline:
            answers = [requests.post(mint, headers=operator, timeout=30).status_code
                       for _ in range(8)]
            if set(answers) == {201}:
                break
            time.sleep(0.5)
        assert set(answers) == {201}, answers
        assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
        assert proc.pid == pid_before and proc.alive()
        log = proc.log_path.read_text()
    assert "vault.token_reloaded" in log
    assert old not in log and new not in log


def test_an_api_without_a_reconciler_keeps_its_token_alive(
        certlocker_stack: CertlockerStack) -> None:
    """A token of an 8 s period, as bootstrap makes certlocker's (24 h) but shorter."""
    period = 8
    token = new_token(certlocker_stack, f"{period}s")
    with api_with_token(certlocker_stack, token, "api-short-token", workers=1) as api:
        time.sleep(3 * period)
        assert requests.get(f"{api.url}/readyz", timeout=30).status_code == 200
        mint = requests.post(f"{api.url}/v1/services/dev/own-token/credentials",
                             headers={"X-Vault-Token": certlocker_stack.operator_token},
                             timeout=30)
        assert mint.status_code == 201, mint.text
        log = api.proc.log_path.read_text()
    assert log.count("vault.token_renewed") >= 3
    assert token not in log
    life = certlocker_stack.client(certlocker_stack.root_token).auth.token.lookup(token)
    assert 0 < life["data"]["ttl"] <= period
