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


def grant_names(client: Any, mount: str, environment: str, service: str,
                dns_names: list[str]) -> None:
    """An administrator grants a service names, as `bao kv put grants/<env>/<service>`
    would (merged with what it had): for specs written straight into Vault."""
    import hvac.exceptions

    path = f"grants/{environment}/{service}"
    try:
        current = client.secrets.kv.v2.read_secret_version(
            mount_point=mount, path=path, raise_on_deleted_version=True)["data"]["data"]
    except hvac.exceptions.InvalidPath:
        current = {}
    merged = list(dict.fromkeys([*(current.get("dns_names") or []), *dns_names]))
    client.secrets.kv.v2.create_or_update_secret(
        mount_point=mount, path=path, secret={**current, "dns_names": merged})
