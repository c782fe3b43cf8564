"""An in-memory ``AuditStore`` (one lane) with real check-and-set, for unit tests.

It stores events in a dict keyed by seq and keeps a head pointer, like the Vault store
keeps a lane's ``audit/events[-NN]/<seq>`` and its head hint. ``events`` is exposed on
purpose: tests play the attacker with write access to storage by editing, deleting or
swapping entries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import Conflict
from .chain import AuditEvent


class MemoryAuditStore:
    def __init__(self) -> None:
        self.events: dict[int, AuditEvent] = {}
        self.head_pointer: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def head(self) -> tuple[int, str] | None:
        with self._lock:
            return self.head_pointer

    def append(self, event: AuditEvent, expected_seq: int) -> None:
        """:raises Conflict: the head moved past ``expected_seq``.
        :raises ValueError: ``event.seq`` is not ``expected_seq + 1``."""
        if event.seq != expected_seq + 1:
            raise ValueError("event.seq must be expected_seq + 1")
        with self._lock:
            current = self.head_pointer[0] if self.head_pointer else 0
            if current != expected_seq or event.seq in self.events:
                raise Conflict(f"audit head is at seq {current}, not {expected_seq}")
            self.events[event.seq] = event
            self.head_pointer = (event.seq, event.hash)

    def read(self, seq: int) -> AuditEvent | None:
        with self._lock:
            return self.events.get(seq)

    def range(self, start_seq: int, end_seq: int) -> Iterator[AuditEvent]:
        with self._lock:
            snapshot = [self.events[s] for s in range(max(1, start_seq), end_seq + 1)
                        if s in self.events]
        return iter(snapshot)
