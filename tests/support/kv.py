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


def every_secret(client: Any, mount: str) -> dict[str, dict[str, Any]]:
    """Every secret under the mount (a root client), by path: each one's latest version."""
    kv = client.secrets.kv.v2
    found: dict[str, dict[str, Any]] = {}
    folders = [""]
    while folders:
        folder = folders.pop()
        for key in kv.list_secrets(mount_point=mount, path=folder)["data"]["keys"]:
            if key.endswith("/"):
                folders.append(folder + key)
                continue
            try:
                found[folder + key] = kv.read_secret_version(
                    mount_point=mount, path=folder + key,
                    raise_on_deleted_version=True)["data"]["data"]
            except Exception:  # noqa: BLE001 - a destroyed latest version holds nothing
                continue
    return found


def holding_key(secrets: dict[str, dict[str, Any]], key_pem: bytes | str) -> list[str]:
    """The paths of ``secrets`` whose data holds the private key ``key_pem``: its base64
    body, compared with line breaks (raw or JSON-escaped) taken out of both sides, so a
    PEM stored with other line lengths, or inside JSON text, is found too."""
    import json

    text = key_pem.decode() if isinstance(key_pem, bytes) else key_pem
    body = "".join(line.strip() for line in text.strip().splitlines()[1:-1])
    assert len(body) > 64, "not a PEM private key"

    def flat(doc: dict[str, Any]) -> str:
        dumped = json.dumps(doc)
        for br in ("\\r", "\\n", "\\\\r", "\\\\n", " "):
            dumped = dumped.replace(br, "")
        return dumped

    return [path for path, doc in secrets.items() if body in flat(doc)]
