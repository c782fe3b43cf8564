"""An honest in-memory ``SigningKeyStore`` for unit tests: it really stores the document
and really enforces check-and-set, with the same semantics as KV v2 (``cas=0`` writes
only if nothing is stored)."""

from __future__ import annotations

import copy
import threading
from typing import Any

from ..errors import Conflict


class MemorySigningKeyStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._version = 0
        self.saves = 0
        self.conflicts = 0
        self.loads = 0

    def __repr__(self) -> str:
        return f"MemorySigningKeyStore(version={self._version})"

    def load(self) -> tuple[dict[str, Any] | None, int]:
        with self._lock:
            self.loads += 1
            return copy.deepcopy(self._document), self._version

    def version(self) -> int:
        with self._lock:
            return self._version

    def save(self, document: dict[str, Any], cas: int) -> int:
        """:raises Conflict: if the stored version is not ``cas``."""
        with self._lock:
            if cas != self._version:
                self.conflicts += 1
                raise Conflict(f"signing keys: version is {self._version}, not {cas}")
            self._document = copy.deepcopy(document)
            self._version += 1
            self.saves += 1
            return self._version
