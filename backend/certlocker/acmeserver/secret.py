"""The ACME server's one secret, kept in Vault (``system/acme-server/secret``), from
which its nonce key and every EAB HMAC key are derived. Created by the first process
that needs it (create-only, so every worker and replica ends up with the same)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading

from ..errors import Conflict
from ..ports import Store


class ServerSecret:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._master: bytes | None = None

    def key(self, purpose: str) -> bytes:
        """A 32-byte key for one ``purpose`` ("nonce", "eab:<kid>")."""
        return hmac.new(self._load(), purpose.encode(), hashlib.sha256).digest()

    def _load(self) -> bytes:
        with self._lock:
            if self._master is None:
                self._master = self._read_or_create()
            return self._master

    def _read_or_create(self) -> bytes:
        path = self._store.paths.acme_server_secret()
        for _ in range(2):
            document, _version = self._store.read_json(path)
            if document and isinstance(document.get("key"), str):
                return base64.b64decode(document["key"])
            try:
                self._store.write_json(path, {"key": base64.b64encode(
                    secrets.token_bytes(32)).decode()}, cas=0)
            except Conflict:
                continue  # another process created it: read theirs
        raise Conflict("the ACME server secret could not be created")
