"""Which failed Vault requests may be sent again (vault/client.py)."""

from __future__ import annotations

import hvac.exceptions as hx
import pytest
import requests
import urllib3.exceptions

from certlocker.vault.client import _not_applied, _transient


def refused() -> requests.ConnectionError:
    inner = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", inner))  # type: ignore[arg-type]


def reset() -> requests.ConnectionError:
    inner = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104))
    return requests.ConnectionError(inner)


@pytest.mark.parametrize("exc, transient, not_applied", [
    (refused(), True, True),
    (requests.ConnectTimeout(), True, True),
    (reset(), True, False),  # sent: may have been applied
    (requests.ReadTimeout(), True, False),
    (hx.VaultDown("Vault is sealed"), True, True),
    (hx.InternalServerError(errors=["local node not active but active cluster node not found"]),
     True, True),
    (hx.InternalServerError(errors=["raft: leadership lost while committing log"]), True, False),
    (hx.BadGateway(errors=["upstream"]), True, False),
    (hx.InvalidRequest(errors=["check-and-set parameter did not match"]), False, False),
    (hx.Forbidden(errors=["permission denied"]), False, False),
])
def test_classification(exc: Exception, transient: bool, not_applied: bool) -> None:
    assert _transient(exc) is transient
    assert _not_applied(exc) is not_applied


def _index(value: int) -> str:
    import base64
    import json
    return base64.b64encode(json.dumps({"cluster": "c1", "value": str(value)}).encode()).decode()


def test_the_consistency_index_only_moves_forward_and_is_sent_with_forwarding() -> None:
    from certlocker.vault.client import ConsistencyIndex

    index = ConsistencyIndex()
    assert index.headers() == {}
    index.observe(_index(35))
    index.observe(_index(30))  # an older answer arriving late
    index.observe(None)
    assert index.headers() == {"X-Vault-Index": _index(35),
                               "X-Vault-Inconsistent": "forward-active-node"}
    index.observe(_index(36))
    assert index.headers()["X-Vault-Index"] == _index(36)
    index.observe("opaque-from-another-server")  # not ours to parse: the newest wins
    assert index.headers()["X-Vault-Index"] == "opaque-from-another-server"
