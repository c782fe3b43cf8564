"""The audit lanes in Vault: ``audit/events/<seq>`` (lane 0) and ``audit/events-NN/<seq>``,
each event created once (check-and-set 0).

certlocker's policy grants only ``create`` and ``read`` on ``audit/``, so an event can
never be rewritten by certlocker itself; an edit or delete by anyone with more rights
is caught by ``certlocker audit verify``: the hash chains, and the KV v2 version each
event is read at (always 1 for an event never written again, so a rewrite whose content
was restored still shows). A head *hint* per lane at
``system/audit-head[-NN]`` saves scanning; ``head`` rolls forward past it, because a
writer may crash between creating an event and moving the hint.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import Iterator

from ..audit.chain import AuditEvent
from ..errors import AccessDenied, Conflict
from ..paths import AUDIT_LANES
from ..transport.settle import until_found
from .store import VaultStore

HINT_EVERY = 16
TAKEN_WAIT = 2.0  # seconds a refused seq is looked for before the 403 is believed

log = logging.getLogger(__name__)


def vault_audit_lanes(store: VaultStore, hints: Executor) -> list["VaultAuditStore"]:
    """Every lane, their head hints written in the background on ``hints``."""
    return [VaultAuditStore(store, lane, hints=hints) for lane in range(AUDIT_LANES)]


class VaultAuditStore:
    """One lane of the audit trail. ``hints`` writes the head hint in the background (one
    thread per process, shared by every lane, in certlocker)."""

    def __init__(self, store: VaultStore, lane: int = 0, *, hints: Executor) -> None:
        self._store = store
        self._hints = hints
        self._lane = lane
        self._hint = store.paths.audit_head_hint(lane)
        self._dir = store.paths.audit_events_dir(lane)

    def _key(self, seq: int) -> str:
        return self._store.paths.audit_event(seq, self._lane)

    def head(self) -> tuple[int, str] | None:
        """The newest event, rolling forward from the hint. A token that may read the
        events but not certlocker's ``system/`` (an auditor's) lists the lane's folder
        instead; so does a hint whose event is gone (needs list on its metadata)."""
        try:
            hint, _ = self._store.read_json(self._hint)
            seq = int(hint["seq"]) if hint else 0
        except AccessDenied:
            seq = self._listed_max()
        last = self.read(seq) if seq else None
        if seq and last is None:
            seq = self._listed_max()
            last = self.read(seq) if seq else None
        while True:
            nxt = self.read(seq + 1)
            if nxt is None:
                break
            seq, last = seq + 1, nxt
        if last is None:
            return None
        return last.seq, last.hash

    def append(self, event: AuditEvent, expected_seq: int) -> None:
        if event.seq != expected_seq + 1:
            raise Conflict("audit event out of sequence")
        try:
            self._store.write_json(self._key(event.seq), event.to_json(), cas=0)
        except AccessDenied as exc:
            # With create but not update (certlocker's policy), Vault answers 403, not a
            # check-and-set error, when another writer already created this seq; a
            # standby may not have that event yet, so look a little while.
            if until_found(lambda: self.read(event.seq), TAKEN_WAIT) is not None:
                raise Conflict(
                    f"audit event {event.seq} was written by another writer") from exc
            raise
        if event.seq % HINT_EVERY == 0:
            # Only a hint, and only now and then: head() rolls forward past it, so a
            # stale one costs a few reads there instead of two calls on every append.
            # Written in the background: the append is durable already, and the caller
            # (a mint, a declare) does not wait for a write it does not need.
            self._hints.submit(self._write_hint, event.seq)

    def _write_hint(self, seq: int) -> None:
        try:
            self._store.write_json(self._hint, {"seq": seq}, cas=None)
        except Exception as exc:  # noqa: BLE001 - a hint; head() rolls forward without it
            log.warning("audit.head_hint_failed", extra={
                "lane": self._lane, "seq": seq, "error": type(exc).__name__})

    def _listed_max(self) -> int:
        keys = self._store.list(self._dir)
        return max((int(k) for k in keys if k.isdigit()), default=0)

    def read(self, seq: int) -> AuditEvent | None:
        """The event at ``seq`` with the KV v2 version it was read at; None when absent
        or its current version is deleted or destroyed."""
        doc, version = self._store.read_json(self._key(seq))
        return AuditEvent.from_json(doc, stored_version=version) if doc else None

    def range(self, start_seq: int, end_seq: int) -> Iterator[AuditEvent]:
        for seq in range(max(1, start_seq), end_seq + 1):
            event = self.read(seq)
            if event is not None:
                yield event
