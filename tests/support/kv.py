"""Reading certlocker's KV mount straight from Vault in integration tests (root token)."""

from __future__ import annotations

from typing import Any


def live_versions(client: Any, mount: str, path: str) -> int:
    """KV v2 versions at ``path`` that are not deleted; 0 when nothing is there."""
    import hvac.exceptions

    try:
        meta = client.secrets.kv.v2.read_secret_metadata(mount_point=mount, path=path)
    except hvac.exceptions.InvalidPath:
        return 0
    return len([v for v in meta["data"]["versions"].values() if not v["deletion_time"]])
