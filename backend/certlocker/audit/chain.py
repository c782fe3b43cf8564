"""Hash-chained audit events: who or what did which action to which subject.

Every event carries the SHA-256 of its predecessor (``prev_hash``) and its own hash over a
canonical JSON of all its other fields, so editing, deleting or reordering stored events
breaks the chain and ``verify`` names the first bad sequence number. Dropping the newest
events (truncating the tail) leaves a valid shorter chain; it is only detectable against
an anchor (a ``(seq, hash)`` pair the auditor kept elsewhere), which ``verify`` accepts.

Events hold public facts only. Anything that looks like key material or a credential is
refused with ``ValueError`` before it is hashed or stored.

The trail is several such chains, "lanes" (docs/decisions/0005-audit-lanes.md). Each
writing process appends to one lane, so API workers, replicas and the reconciler do not
race for one chain's next seq; a writer that meets another in its lane moves to another
lane. Verification walks every lane, queries merge them newest first.

Storage is behind ``AuditStore`` (one lane): the Vault store implements it with KV v2
check-and-set, ``audit.memory.MemoryAuditStore`` in memory for tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import heapq
import itertools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from ..clock import Clock, parse_rfc3339, rfc3339
from ..errors import Conflict

GENESIS_HASH = "0" * 64
OUTCOMES = frozenset({"success", "failure", "denied"})
MAX_DETAILS_BYTES = 8192
MAX_FIELD_CHARS = 1024

# Key names whose value is a secret by definition. Compared after lower-casing and
# turning '-' into '_'; a name ending in "_<one of these>" (client_secret) counts too.
_SECRET_KEY_NAMES = frozenset({
    "private_key", "privatekey", "key_pem", "token", "password", "passphrase", "secret",
    "jwt", "client_token", "secret_id", "hmac_key",
})
_PEM_PRIVATE_MARKER = "PRIVATE KEY-----"


@dataclasses.dataclass(frozen=True)
class AuditEvent:
    """One link of the chain. Build new events with :meth:`create`, which hashes them."""

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    outcome: str
    reason: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str
    # Where the event is stored, not part of it: not hashed and not stored in the event.
    lane: int = dataclasses.field(default=0, compare=False)
    # The storage's version of the record (KV v2: 1 for an event created once and never
    # written again), when the storage keeps versions; not part of the event either.
    stored_version: int = dataclasses.field(default=1, compare=False)

    @classmethod
    def create(cls, *, seq: int, time: str, actor: str, action: str, subject: str,
               outcome: str, reason: str | None, details: Mapping[str, Any] | None,
               prev_hash: str) -> "AuditEvent":
        """Validate the fields and compute the hash.

        :raises ValueError: a field is malformed, too large, or holds key material or a
            credential (nothing of it is stored or echoed in the message).
        """
        if seq < 1:
            raise ValueError("seq starts at 1")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
        for name, value in (("actor", actor), ("action", action), ("subject", subject)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("reason must be a string or None")
        clean = _copy_details(details or {})
        for name, text in (("actor", actor), ("action", action), ("subject", subject),
                           ("reason", reason)):
            if text is not None:
                if len(text) > MAX_FIELD_CHARS:
                    raise ValueError(f"{name} is longer than {MAX_FIELD_CHARS} characters")
                _refuse_key_material(name, text)
        _refuse_key_material("details", clean)
        if len(_canonical(clean)) > MAX_DETAILS_BYTES:
            raise ValueError(f"details are larger than {MAX_DETAILS_BYTES} bytes")
        body = {"seq": seq, "time": time, "actor": actor, "action": action,
                "subject": subject, "outcome": outcome, "reason": reason,
                "details": clean, "prev_hash": prev_hash}
        return cls(**body, hash=_digest(body))

    def body(self) -> dict[str, Any]:
        """Every field except ``hash`` and ``lane``: what the hash covers."""
        data = self.to_json()
        del data["hash"]
        return data

    def computed_hash(self) -> str:
        return _digest(self.body())

    @property
    def at(self) -> dt.datetime:
        return parse_rfc3339(self.time)

    def to_json(self) -> dict[str, Any]:
        """The stored form (without ``lane``, which the storage path gives, and
        ``stored_version``, which the storage keeps)."""
        data = dataclasses.asdict(self)
        del data["lane"]
        del data["stored_version"]
        return data

    def to_view(self) -> dict[str, Any]:
        """What a reader of the trail is shown: the stored form and the lane."""
        return {**self.to_json(), "lane": self.lane}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], stored_version: int = 1) -> "AuditEvent":
        """Load a stored event as is (no re-hashing: ``verify`` judges it).

        :raises KeyError: a field is missing.
        """
        return cls(
            seq=int(data["seq"]), time=data["time"], actor=data["actor"],
            action=data["action"], subject=data["subject"], outcome=data["outcome"],
            reason=data.get("reason"), details=dict(data.get("details") or {}),
            prev_hash=data["prev_hash"], hash=data["hash"], stored_version=stored_version,
        )


class AuditStore(Protocol):
    """Persistence of the chain. Events are keyed by ``seq``; appends are check-and-set.

    ``head`` must reflect every successful append: a store that keeps a separate head
    pointer must roll it forward over events that exist beyond it (a writer may crash
    between writing an event and moving the pointer).
    """

    def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest event, or None for an empty chain."""
        ...

    def append(self, event: AuditEvent, expected_seq: int) -> None:
        """Store ``event`` (whose seq is ``expected_seq + 1``) if the head is still at
        ``expected_seq`` (0 for an empty chain).

        :raises Conflict: another writer appended first; nothing was stored.
        """
        ...

    def read(self, seq: int) -> AuditEvent | None: ...

    def range(self, start_seq: int, end_seq: int) -> Iterator[AuditEvent]:
        """Stored events with ``start_seq <= seq <= end_seq``, in storage-key order.
        Missing keys are skipped, so a deleted event shows up as a gap."""
        ...


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head: tuple[int, str] | None = None  # the head the walk went up to


class AuditLog:
    """Records events through one ``AuditStore`` per lane; safe with several writers."""

    def __init__(self, lanes: Sequence[AuditStore], clock: Clock, *,
                 lane: int | None = None, max_attempts: int = 32,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not lanes:
            raise ValueError("an audit log needs at least one lane")
        self._lanes = list(lanes)
        self._clock = clock
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._lock = threading.Lock()
        # Consecutive PIDs (one host's gunicorn workers) start in different lanes.
        self._lane = (os.getpid() if lane is None else lane) % len(self._lanes)
        self._moves = 0
        self._last: tuple[int, str] | None = None  # the newest event of our lane we know
        # Did another writer append to our lane lately? Then look ahead before writing.
        self._contended = False

    @property
    def lane(self) -> int:
        return self._lane

    def record(self, actor: str, action: str, subject: str, outcome: str,
               reason: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditEvent:
        """Append one event to this process's lane and return it.

        Links the new event to the newest one this process knows in its lane and creates
        it at the next seq, create-only: while no other writer shares the lane, that is
        the whole cost (one write). When another writer took that seq, the store refuses
        the write; the log then rolls forward over the other writer's events, links to the
        newest, and retries with jittered backoff, up to ``max_attempts`` times. While
        other writers keep appending, it looks one event ahead first (one read instead of
        a refused write and the reads after it), and writes blindly again once a look
        finds nothing new. Either way an event is only ever created at the seq right after
        the event its ``prev_hash`` names, and a seq is created once, so a lane cannot
        fork. Threads of one process take turns, so they never race each other.

        After an event that met another writer (a refused write, or a look that found its
        event), the log moves to another lane for the next events: at most as many times
        as there are lanes in the life of the process, so more writers than lanes settle
        down instead of moving for ever.

        :raises ValueError: the fields are malformed or hold key material.
        :raises Conflict: every attempt lost the race.
        """
        with self._lock:
            store = self._lanes[self._lane]
            if self._last is None:
                self._last = store.head() or (0, GENESIS_HASH)
            look_first = self._contended
            for attempt in range(self._max_attempts):
                if look_first:
                    known = self._last[0]
                    self._last = _peek_forward(store, *self._last)
                    self._contended = self._last[0] != known
                seq, prev = self._last
                event = AuditEvent.create(
                    seq=seq + 1, time=rfc3339(self._clock.now()), actor=actor,
                    action=action, subject=subject, outcome=outcome, reason=reason,
                    details=details, prev_hash=prev)
                try:
                    store.append(event, expected_seq=seq)
                except Conflict:
                    self._last = _roll_forward(store, seq, prev)
                    self._contended = True
                    look_first = False  # just looked
                    self._sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** attempt)))
                    continue
                self._last = (event.seq, event.hash)
                written = dataclasses.replace(event, lane=self._lane)
                if self._contended:
                    self._move()
                return written
        raise Conflict(f"audit append lost the race {self._max_attempts} times")

    def _move(self) -> None:
        if len(self._lanes) < 2 or self._moves >= len(self._lanes):
            return
        self._moves += 1
        self._lane = (self._lane + random.randrange(1, len(self._lanes))) % len(self._lanes)
        self._last = None
        self._contended = False

    def heads(self) -> dict[int, tuple[int, str]]:
        """``{lane: (seq, hash)}`` of every lane that has events: keep them outside
        Vault as anchors for ``verify``."""
        return {i: head for i, store in enumerate(self._lanes)
                if (head := store.head()) is not None}

    def verify(self, anchors: Mapping[int, tuple[int, str]] | None = None
               ) -> list["LaneResult"]:
        return verify_lanes(self._lanes, anchors)

    def query(self, **filters: Any) -> list[AuditEvent]:
        return query(self._lanes, **filters)


def _peek_forward(store: AuditStore, seq: int, prev: str) -> tuple[int, str]:
    """One read ahead: with two writers taking turns, the other's event is usually the
    only new one, so the write after it is tried without a read confirming that nothing
    follows (a refused write rolls forward fully)."""
    nxt = store.read(seq + 1)
    return (nxt.seq, nxt.hash) if nxt is not None else (seq, prev)


def _roll_forward(store: AuditStore, seq: int, prev: str) -> tuple[int, str]:
    while (nxt := store.read(seq + 1)) is not None:
        seq, prev = nxt.seq, nxt.hash
    return seq, prev


@dataclasses.dataclass(frozen=True)
class LaneResult:
    lane: int
    result: VerifyResult


def verify_lanes(lanes: Sequence[AuditStore],
                 anchors: Mapping[int, tuple[int, str]] | None = None) -> list[LaneResult]:
    """``verify`` every lane, each against its anchor if one is given.

    :raises ValueError: an anchor names a lane that does not exist.
    """
    anchors = anchors or {}
    unknown = sorted(set(anchors) - set(range(len(lanes))))
    if unknown:
        raise ValueError(f"no audit lane {unknown[0]} (lanes are 0 to {len(lanes) - 1})")
    return [LaneResult(i, verify(store, anchor=anchors.get(i)))
            for i, store in enumerate(lanes)]


def verify(store: AuditStore, *, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Walk the whole chain from seq 1 to the head and report the first broken link.

    Detects an edited event (its hash no longer matches its fields), a rewritten one
    even when its content was put back (the storage holds a version after the first: an
    event is created once, so any later version, or a deleted or destroyed current one,
    is tampering), a deleted or inserted event (a gap in seq, or a ``prev_hash`` that
    does not match the event before), reordered events (a seq out of place), and a head
    pointer that disagrees with the last event. With ``anchor=(seq, hash)`` it also checks
    that the event at that seq still exists with that hash, which is how a truncated tail
    is caught.
    Streams the events: memory does not grow with the chain.
    """
    head = store.head()
    return dataclasses.replace(_walk(store, head, anchor), head=head)


def _walk(store: AuditStore, head: tuple[int, str] | None,
          anchor: tuple[int, str] | None) -> VerifyResult:
    end = head[0] if head else 0
    if anchor is not None and anchor[0] > end:
        return VerifyResult(False, 0, end + 1,
                            f"chain ends at seq {end} but the anchor is at seq {anchor[0]}"
                            " (tail truncated)")
    prev_hash = GENESIS_HASH
    expected = 1
    checked = 0
    for event in store.range(1, end):
        if event.seq != expected:
            kind = ("deleted or reordered" if event.seq > expected
                    else "reordered or duplicated")
            return VerifyResult(False, checked, expected,
                                f"expected seq {expected}, found seq {event.seq} "
                                f"({kind})")
        if event.computed_hash() != event.hash:
            return VerifyResult(False, checked, event.seq,
                                "hash does not match the event's fields (edited)")
        if event.stored_version != 1:
            return VerifyResult(False, checked, event.seq,
                                f"stored as version {event.stored_version} of an event "
                                "written once (rewritten, even if its content is back)")
        if event.prev_hash != prev_hash:
            return VerifyResult(False, checked, event.seq,
                                "prev_hash does not match the previous event's hash")
        if anchor is not None and event.seq == anchor[0] and event.hash != anchor[1]:
            return VerifyResult(False, checked, event.seq,
                                "event differs from the anchor's hash")
        prev_hash = event.hash
        checked += 1
        expected += 1
    if expected != end + 1:
        return VerifyResult(False, checked, expected,
                            f"expected seq {expected}, the chain ends before the head "
                            f"(seq {end}): events missing")
    if head is not None and head[1] != prev_hash:
        return VerifyResult(False, checked, end, "head hash does not match the last event")
    return VerifyResult(True, checked)


def query(lanes: Sequence[AuditStore], *, certificate: str | None = None,
          actor: str | None = None, action: str | None = None,
          since: dt.datetime | None = None, until: dt.datetime | None = None,
          limit: int = 100) -> list[AuditEvent]:
    """Events matching every given filter, newest first across the lanes, at most
    ``limit``, each with its ``lane`` set.

    ``certificate`` matches the event's subject (a certificate id such as
    ``prod.api.www``); ``since``/``until`` bound the event time (inclusive).
    Each lane is read backwards from its head one event at a time, only as far as the
    merge needs: a plain question costs about ``limit`` reads plus two per lane; a
    selective filter on a long trail may read all of it. Lanes are merged by event time,
    so events of different hosts are ordered by their clocks.
    """
    if limit < 1:
        return []
    streams = [_newest_first(store, lane, certificate, actor, action, since, until)
               for lane, store in enumerate(lanes)]
    merged = heapq.merge(*streams, key=lambda e: e.at, reverse=True)
    return list(itertools.islice(merged, limit))


def _newest_first(store: AuditStore, lane: int, *filters: Any) -> Iterator[AuditEvent]:
    head = store.head()
    for seq in range(head[0] if head else 0, 0, -1):
        event = store.read(seq)
        if event is not None and _matches(event, *filters):
            yield dataclasses.replace(event, lane=lane)


def _matches(event: AuditEvent, certificate: str | None, actor: str | None,
             action: str | None, since: dt.datetime | None,
             until: dt.datetime | None) -> bool:
    if certificate is not None and event.subject != certificate:
        return False
    if actor is not None and event.actor != actor:
        return False
    if action is not None and event.action != action:
        return False
    if since is not None or until is not None:
        at = event.at
        if since is not None and at < since:
            return False
        if until is not None and at > until:
            return False
    return True


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


def _copy_details(value: Any, depth: int = 0) -> Any:
    """A deep copy of JSON-able data (so a frozen event cannot change under its hash).

    :raises ValueError: a value is not JSON data, or nests too deep.
    """
    if depth > 8:
        raise ValueError("details nest too deep")
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("details keys must be strings")
            out[key] = _copy_details(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_copy_details(item, depth + 1) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"details values must be JSON data, not {type(value).__name__}")


def _is_secret_key_name(name: str) -> bool:
    norm = name.strip().lower().replace("-", "_")
    return norm in _SECRET_KEY_NAMES or any(norm.endswith("_" + s)
                                            for s in _SECRET_KEY_NAMES)


def _refuse_key_material(where: str, value: Any) -> None:
    """:raises ValueError: naming where, never echoing the value."""
    if isinstance(value, str):
        if _PEM_PRIVATE_MARKER in value:
            raise ValueError(f"{where} looks like a PEM private key; refused")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_key_material(f"{where} key", key)
            if _is_secret_key_name(key):
                raise ValueError(f"{where}.{key[:64]} names a secret; refused")
            _refuse_key_material(f"{where}.{key[:64]}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_key_material(f"{where}[{index}]", item)
