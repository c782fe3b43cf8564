"""An operator-admin can set issuer secrets (TSIG, EAB) in Vault but never read them back;
certlocker can read them."""

from __future__ import annotations

import pytest
import requests

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["system/dns/internal", "system/acme/eab/zerossl"])
def test_admin_writes_but_cannot_read_issuer_secrets(certlocker_stack, path: str) -> None:  # type: ignore[no-untyped-def]
    url = f"{certlocker_stack.vault_addr}/v1/certlocker/data/{path}"
    admin = {"X-Vault-Token": certlocker_stack.operator_token}
    wrote = requests.post(url, headers=admin, json={"data": {"secret": "c2VjcmV0"}}, timeout=10)
    assert wrote.status_code == 200, wrote.text
    assert requests.get(url, headers=admin, timeout=10).status_code == 403
    own = (certlocker_stack.state_dir / "certlocker.token").read_text().strip()
    read = requests.get(url, headers={"X-Vault-Token": own}, timeout=10)
    assert read.status_code == 200 and read.json()["data"]["data"]["secret"] == "c2VjcmV0"
