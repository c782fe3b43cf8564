"""Reading the audit trail straight from Vault with a root client, as an attacker or an
independent auditor would: every lane folder under ``audit/``, without certlocker's code."""

from __future__ import annotations

import json
from typing import Any

import hvac


def lane_path(lane: int, seq: int) -> str:
    folder = "audit/events" if lane == 0 else f"audit/events-{lane:02d}"
    return f"{folder}/{seq:012d}"


def stored_events(client: hvac.Client, mount: str) -> list[dict[str, Any]]:
    """Every stored event, each with the ``lane`` its folder names."""
    kv = client.secrets.kv.v2
    events = []
    for folder in kv.list_secrets(mount_point=mount, path="audit")["data"]["keys"]:
        if not folder.startswith("events"):
            continue
        lane = int(folder.rstrip("/").partition("-")[2] or 0)
        for key in kv.list_secrets(mount_point=mount, path=f"audit/{folder}")["data"]["keys"]:
            doc = kv.read_secret_version(mount_point=mount, path=f"audit/{folder}{key}",
                                         raise_on_deleted_version=True)["data"]["data"]
            events.append({**json.loads(doc["json"]), "lane": lane})
    return events
