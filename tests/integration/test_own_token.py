"""certlocker's own Vault token refused: the deployment's fault, said as such.

A second API (real gunicorn) beside the shared stack, with a token of its own, which the
test revokes with root. Until then it serves; after, /readyz says not ready and every
request that needs certlocker's token answers 503 naming that token, never a 403 that
would blame the caller.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import requests

from tests.support.stack import CertlockerStack, devstack, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def own_api(certlocker_stack: CertlockerStack) -> Iterator[tuple[str, str, devstack.Proc]]:
    stack = certlocker_stack.stack
    token = certlocker_stack.client(certlocker_stack.root_token).auth.token.create_orphan(
        policies=["certlocker"], no_default_policy=True, period="1h",
        display_name="revocable")["auth"]["client_token"]
    token_file = stack.state_dir / "revocable.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    gunicorn = devstack.find_binary("gunicorn")
    proc = devstack.Proc.spawn(
        "api-own-token", [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", "1",
                          "--threads", "4", *devstack._gunicorn_isolation(gunicorn),
                          "certlocker.app:create_app()"],
        stack.state_dir / "api-own-token.log", cwd=devstack.REPO,
        env={**stack.service_env(), "CERTLOCKER_VAULT_TOKEN_FILE": str(token_file)},
        marker="certlocker.app:create_app()")
    try:
        url = f"http://127.0.0.1:{port}"
        devstack.wait_http(f"{url}/readyz", 60, proc=proc)
        yield url, token, proc
    finally:
        proc.stop()


def test_a_revoked_own_token_is_not_ready_and_answers_503_not_403(
        certlocker_stack: CertlockerStack, own_api: tuple[str, str, devstack.Proc]) -> None:
    url, token, proc = own_api
    operator = {"X-Vault-Token": certlocker_stack.operator_token}
    mint = f"{url}/v1/services/dev/own-token/credentials"
    assert requests.post(mint, headers=operator, timeout=30).status_code == 201

    certlocker_stack.client(certlocker_stack.root_token).auth.token.revoke(token)

    ready = requests.get(f"{url}/readyz", timeout=30)
    assert (ready.status_code, ready.json()) == (503, {"status": "vault-token-invalid"})
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    refused = [
        requests.post(mint, headers=operator, timeout=30),
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
