"""The Vault audit store's head hint is written in the background: an append (a mint, a
declare) never waits for it, and ``head`` is right with or without it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from certlocker.audit.chain import AuditLog, verify
from certlocker.clock import FixedClock
from certlocker.errors import AccessDenied, Conflict
from certlocker.paths import VaultPaths
from certlocker.vault.audit_store import HINT_EVERY, VaultAuditStore
from tests.support.pools import threads

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
HEAD_HINT = VaultPaths().audit_head_hint()


class MemoryKV:
    """The slice of ``VaultStore`` the audit store uses, with certlocker's create-only
    policy on ``audit/`` (an existing event answers 403, as Vault does). Writes of the
    head hint wait until ``release`` is set."""

    def __init__(self) -> None:
        self.paths = VaultPaths()
        self.data: dict[str, dict[str, Any]] = {}
        self.release = threading.Event()
        self.hint_writes: list[int] = []
        self._lock = threading.Lock()

    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]:
        with self._lock:
            doc = self.data.get(logical)
            return (dict(doc), 1) if doc is not None else (None, 0)

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int:
        if logical.startswith(HEAD_HINT):
            assert self.release.wait(10), "hint write never released"
        with self._lock:
            if logical.startswith("audit/") and logical in self.data:
                raise AccessDenied(f"Vault denied access to {logical}")
            if cas == 0 and logical in self.data:
                raise Conflict(logical)
            self.data[logical] = dict(document)
            if logical.startswith(HEAD_HINT):
                self.hint_writes.append(int(document["seq"]))
        return 1

    def list(self, logical_dir: str) -> list[str]:
        with self._lock:
            return [k.rsplit("/", 1)[1] for k in self.data if k.startswith(logical_dir)]


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_appends_do_not_wait_for_the_head_hint() -> None:
    kv = MemoryKV()
    log = AuditLog([VaultAuditStore(kv,
                                    hints=threads(1, "audit-head-hint"))], FixedClock(T0))  # type: ignore[arg-type]
    for i in range(HINT_EVERY + 3):  # the hint write at HINT_EVERY is held back
        log.record("alice", "credential.mint", f"service:prod/s{i}", "success")
    assert kv.hint_writes == []
    kv.release.set()
    _wait_for(lambda: kv.hint_writes == [HINT_EVERY])
    assert kv.data[HEAD_HINT] == {"seq": HINT_EVERY}


def test_head_is_right_before_and_after_the_hint_lands() -> None:
    kv = MemoryKV()
    store = VaultAuditStore(kv, hints=threads(1, "audit-head-hint"))  # type: ignore[arg-type]
    log = AuditLog([store], FixedClock(T0))
    for i in range(HINT_EVERY + 2):
        log.record("alice", "credential.mint", f"s{i}", "success")
    newest = store.read(HINT_EVERY + 2)
    assert newest is not None
    assert store.head() == (newest.seq, newest.hash)  # no hint yet: rolled forward from 0
    kv.release.set()
    _wait_for(lambda: HEAD_HINT in kv.data)
    assert store.head() == (newest.seq, newest.hash)  # from the hint, rolled forward
    other = AuditLog([store], FixedClock(T0))  # another process links after the newest
    assert other.record("bob", "spec.create", "prod.api.www", "success").seq == HINT_EVERY + 3
    assert verify(store).ok


def test_each_lane_keeps_its_own_folder_and_hint() -> None:
    kv = MemoryKV()
    kv.release.set()
    lanes = [VaultAuditStore(kv, n,
                             hints=threads(1, "audit-head-hint")) for n in range(3)]  # type: ignore[arg-type]
    log = AuditLog(lanes, FixedClock(T0), lane=2)
    for i in range(HINT_EVERY):
        log.record("alice", "credential.mint", f"s{i}", "success")
    _wait_for(lambda: kv.hint_writes == [HINT_EVERY])
    assert sorted(k for k in kv.data if k.startswith("audit/")) == [
        f"audit/events-02/{seq:012d}" for seq in range(1, HINT_EVERY + 1)]
    assert kv.data["system/audit-head-02"] == {"seq": HINT_EVERY}
    assert lanes[0].head() is None and lanes[1].head() is None
    newest = lanes[2].read(HINT_EVERY)
    assert newest is not None and lanes[2].head() == (HINT_EVERY, newest.hash)
