"""Mass replacement: one tracked, durable operation that replaces many certificates.

``start`` selects (with the caller's token: what they may list and read), checks with
Vault that the caller may renew every selected certificate (``update`` on each spec, as
``POST .../renew`` asks) and writes the operation record; that record is the promise,
and the start answers once it is in Vault. Behind the answer (or before it, without a
follower), a renewal request is filed for each certificate
(``renewal_requests.request_renewal``: in the status with check-and-set, plus a due hint
at now), most urgent first, and each issuance is queued as soon as its request is in,
so issuing the first ones does not wait for the last request. From then on the records
in Vault are the operation: the reconciler's ``renewal-requested`` trigger issues even if
every process dies, ``advance`` (called by the reconciler every tick, and by the API
process that started it while it lives) files any request a crash left unfiled, verifies
the new certificates' nodes, revokes the old ones when asked (``revoke_old``), and marks
the operation done.

Records (``paths.replacement``): the operation (selector, state, counts) and its
selected certificates in chunks of ``CHUNK`` (``paths.replacement_chunk``), each item
with the serial and fingerprint at selection, its nodes, and (with ``revoke_old``) the
old leaf's public PEM, which the CA needs to revoke it. Progress is never stored: it is
computed from every certificate's status as it is now (``policy.replacement``).

Certificates whose key is held by a client of certlocker's ACME server are not reissued
here: their renewal request moves their ARI window to now, and they are counted as
``awaiting-client`` until the client orders.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, Protocol

from .. import cas
from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock, parse_rfc3339, rfc3339
from ..errors import (AccessDenied, CertlockerError, Conflict, NotFound,
                      UnprocessableSelection)
from ..models import CertificateRef, CertificateStatus
from ..ports import Lister, Revoker
from . import governed_issuer
from .policy import replacement as policy
from .policy.replacement import Item, ItemState, Request
from .ports import Store, Verifying
from .revocation import REASONS, parse_reason
from .verification import node_addresses
from .views import CertificateView

log = logging.getLogger(__name__)

CHUNK = 100  # certificates per chunk record (each item up to ~1.5 KB with a leaf)
RUNNING, DONE = "running", "done"
#: a claim to revoke an old certificate older than this is taken over
CLAIM_TIMEOUT = dt.timedelta(minutes=5)
#: the API process re-verifies one issued certificate's nodes at most this often
VERIFY_EVERY = 5.0
#: the status reads per second the API process's following of one operation may cost
FOLLOW_READS_PER_SECOND = 100.0

@dataclasses.dataclass
class _Memo:
    """What a process remembers of one running operation between looks."""

    #: the statuses of items seen verified: a verified replacement stays done
    verified: dict[str, CertificateStatus] = dataclasses.field(default_factory=dict)
    #: when each item's spec was last seen declared (monotonic)
    declared_at: dict[str, float] = dataclasses.field(default_factory=dict)


class CallerReads(Store, Lister, Protocol):
    """The store bound to the caller's token: it lists and reads what the caller may,
    and tells what else the caller's token may do."""


Views = Callable[[list[CertificateRef]], list[CertificateView | None]]
#: ``renew(ref, actor, serial)``: record one renewal request and queue its issuance,
#: unless the certificate is no longer ``serial`` (then nothing, and a falsy answer)
Renew = Callable[[CertificateRef, str, str], Any]
#: operations whose verified items a process remembers (see ``snapshot``)
REMEMBERED_OPERATIONS = 8
#: a certificate still on its old serial has its spec looked for at most this often
DECLARED_RECHECK = 30.0
#: states a look at the operation reads no status for (remembered, or in the item)
SETTLED = frozenset({ItemState.VERIFIED, ItemState.REVOKED, ItemState.REVOKE_FAILED})


@dataclasses.dataclass(frozen=True)
class Operation:
    """The stored record of one operation (not its progress)."""

    id: str
    state: str
    selector: policy.Selector
    revoke_old: bool
    revocation_reason: str
    reason: str | None
    created_at: dt.datetime
    created_by: str
    selected: int
    chunks: int
    requested: bool  # every renewal request was filed (False: a crash came first)
    done_at: dt.datetime | None = None
    #: the counts per state when it was marked done (a listing shows them unread)
    final: Mapping[str, int] | None = None
    #: when the issuers' rate limits let the last selected certificate be ordered, as
    #: reckoned at the start (None: no limit holds any of them back)
    limits_eta: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "selector": self.selector.to_json(),
                "revoke_old": self.revoke_old, "revocation_reason": self.revocation_reason,
                "reason": self.reason, "created_at": rfc3339(self.created_at),
                "created_by": self.created_by, "selected": self.selected,
                "chunks": self.chunks, "requested": self.requested,
                "done_at": rfc3339(self.done_at) if self.done_at else None,
                "final": dict(self.final) if self.final is not None else None,
                "limits_eta": rfc3339(self.limits_eta) if self.limits_eta else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Operation":
        return cls(id=data["id"], state=data["state"],
                   selector=policy.Selector.from_json(data.get("selector") or {}),
                   revoke_old=bool(data.get("revoke_old")),
                   revocation_reason=data.get("revocation_reason") or "superseded",
                   reason=data.get("reason"), created_at=parse_rfc3339(data["created_at"]),
                   created_by=data.get("created_by") or "", selected=int(data["selected"]),
                   chunks=int(data["chunks"]), requested=bool(data.get("requested")),
                   done_at=parse_rfc3339(data["done_at"]) if data.get("done_at") else None,
                   final=data.get("final") if isinstance(data.get("final"), dict) else None,
                   limits_eta=parse_rfc3339(data["limits_eta"]) if data.get("limits_eta")
                   else None)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """An operation with every item's state as of ``at``: what the API shows."""

    operation: Operation
    items: list[tuple[Item, ItemState, CertificateStatus | None]]
    progress: policy.Progress
    at: dt.datetime

    def to_json(self, with_items: bool = True) -> dict[str, Any]:
        op = self.operation
        progress = self.progress.to_json()
        if op.limits_eta is not None and not self.progress.done:
            # Never sooner than the rate limits allow: the observed pace cannot know
            # that the rest waits for slots.
            held = max((op.limits_eta - self.at).total_seconds(), 0.0)
            progress["eta_seconds"] = round(max(progress["eta_seconds"] or 0.0, held), 1)
        body: dict[str, Any] = {
            "id": op.id, "state": op.state, "selected": op.selected,
            "created_at": rfc3339(op.created_at), "created_by": op.created_by,
            "done_at": rfc3339(op.done_at) if op.done_at else None,
            "selector": op.selector.to_json(), "revoke_old": op.revoke_old,
            "revocation_reason": op.revocation_reason if op.revoke_old else None,
            "reason": op.reason, **progress,
            "limits_eta": rfc3339(op.limits_eta) if op.limits_eta else None,
            "awaiting_client": self.progress.counts[ItemState.AWAITING_CLIENT.value],
            "failures": [_failure(item, state, status) for item, state, status in self.items
                         if state in (ItemState.FAILING, ItemState.REVOKE_FAILED)
                         or item.revoke_error][:100]}
        if with_items:
            body["items"] = [_item_json(item, state, status)
                             for item, state, status in self.items]
        return body


def _failure(item: Item, state: ItemState, status: CertificateStatus | None) -> dict[str, Any]:
    error = item.revoke_error or (status.last_error if status else None)
    return {"id": item.id, "state": state.value, "last_error": error}


def _item_json(item: Item, state: ItemState,
               status: CertificateStatus | None) -> dict[str, Any]:
    current = status.current if status else None
    serial = current.serial if current and current.serial != item.serial else None
    return {"id": item.id, "state": state.value, "old_serial": item.serial,
            "not_after": rfc3339(item.not_after), "nodes": len(item.nodes),
            "serial": serial or item.replaced_by,
            "revoked_at": rfc3339(item.revoked_at) if item.revoked_at else None,
            "last_error": item.revoke_error or (status.last_error if status and state in (
                ItemState.FAILING, ItemState.PENDING) else None)}


class ReplacementService:
    """Starts and follows replacement operations (certlocker's own token for its own
    records; the caller's for everything the caller decides)."""

    def __init__(self, store: Store, *, views: Callable[[Store, list[CertificateRef]],
                                                        list[CertificateView | None]],
                 refs: Callable[[Store, str | None, str | None], Iterable[CertificateRef]],
                 renew: Renew, issuers: Callable[[], Mapping[str, Any]],
                 pool: cf.Executor, clock: Clock | None = None,
                 audit: Auditor | None = None, actor: str = "certlocker",
                 verifier: Verifying | None = None,
                 follow: cf.Executor | None = None, follow_for: float = 3600.0,
                 follow_every: float = 2.0,
                 delivery: dt.timedelta = dt.timedelta(0)) -> None:
        """``views``/``refs``: the caller's reads (``CertificateService``); ``renew``
        records one renewal request and queues its issuance in this process; ``pool``
        runs many reads or requests side by side; ``follow`` (the API's) files a started
        operation's requests behind the answer, then runs ``advance`` on it every
        ``follow_every`` seconds for up to ``follow_for``, so it moves on without waiting
        for the reconciler's tick. Without ``follow`` the start files every request
        before it returns. ``delivery``: how long the fleet takes to pick a new
        certificate up (``settings.delivery_seconds``), counted in ``limits_eta``."""
        self._store = store
        self._views = views
        self._refs = refs
        self._renew = renew
        self._issuers = issuers
        self._pool = pool
        self._clock = clock or SystemClock()
        self._audit = audit or NoAudit()
        self._actor = actor
        self._verifier = verifier
        self._follow = follow
        self._follow_for = follow_for
        self._follow_every = follow_every
        self._delivery = delivery
        self._verified_at: dict[str, float] = {}
        self._memos: collections.OrderedDict[str, _Memo] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- start ---------------------------------------------------------------------------
    def select(self, caller: Store, selector: policy.Selector,
               keep_leaf: bool) -> list[Item]:
        """Every certificate the caller may list and read that ``selector`` picks, most
        urgent first."""
        refs = list(self._refs(caller, selector.environment, selector.service))
        found: list[Item] = []
        batch = 200
        for start in range(0, len(refs), batch):
            for view in self._views(caller, refs[start:start + batch]):
                if view is None or not policy.matches(selector, view.spec, view.status):
                    continue
                nodes = [a for t in view.spec.targets for a in node_addresses(t)]
                found.append(policy.select_item(view.spec, view.status, nodes, keep_leaf))
        return policy.urgency_order(found)

    def start(self, caller: CallerReads, request: Request, actor: str) -> Operation:
        """Select, authorize, record, request: see the module's docstring. The operation
        is in Vault before this returns; each renewal request is too when this service
        has no follower, else its follower files them right after.

        :raises InvalidInput: a bad revocation reason.
        :raises UnprocessableSelection: the selector picks nothing.
        :raises AccessDenied: the caller may not renew some selected certificate
            (nothing was started; recorded in the audit trail).
        """
        revocation_reason = parse_reason(request.revocation_reason)
        began = time.monotonic()
        items = self.select(caller, request.selector, request.revoke_old)
        selected = time.monotonic()
        if not items:
            raise UnprocessableSelection("no certificate you may see matches the selector",
                                         selector=request.selector.to_json())
        self._authorize(caller, items, actor)
        op_id = uuid.uuid4().hex
        chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
        now = self._clock.now()
        op = Operation(id=op_id, state=RUNNING, selector=request.selector,
                       revoke_old=request.revoke_old, revocation_reason=revocation_reason,
                       reason=request.reason, created_at=now,
                       created_by=actor, selected=len(items), chunks=len(chunks),
                       requested=False, limits_eta=self._limits_eta(items, now))
        paths = self._store.paths
        # Chunks first, then the operation that names them: an operation record is
        # never read without its items.
        list(self._pool.map(lambda pair: self._store.write_json(
            paths.replacement_chunk(op_id, pair[0]),
            {"items": [i.to_json() for i in pair[1]]}, cas=0), enumerate(chunks)))
        # The running marker before the record: a record never runs unseen by the
        # reconciler (a marker without a record is dropped by ``advance_all``).
        self._store.write_json(paths.replacement_running(op_id),
                               {"id": op_id, "at": rfc3339(op.created_at)}, cas=None)
        self._store.write_json(paths.replacement(op_id), op.to_json(), cas=0)
        audited(self._audit, actor, "replacement.start", op_id, "success",
                reason=request.reason, details={
                    "selector": request.selector.to_json(), "count": len(items),
                    "revoke_old": request.revoke_old,
                    "awaiting_client": sum(1 for i in items if i.client)})
        log.info("replacement.started", extra={
            "replacement": op_id, "count": len(items),
            "select_seconds": round(selected - began, 3),
            "record_seconds": round(time.monotonic() - selected, 3)})
        if self._follow is None:
            return self._file(op, items)
        self._follow.submit(self._file_and_follow, op, items)
        return op

    def _file(self, op: Operation, items: list[Item]) -> Operation:
        began = time.monotonic()
        self._request_all(op, items)
        log.info("replacement.requested", extra={
            "replacement": op.id, "count": len(items),
            "request_seconds": round(time.monotonic() - began, 3)})
        return self._mark(op.id, lambda o: dataclasses.replace(o, requested=True))

    def _file_and_follow(self, op: Operation, items: list[Item]) -> None:
        """The follower's work for an operation this process started: its requests,
        then following it. A failure here loses nothing: the reconciler's ``advance``
        files what is unfiled."""
        try:
            self._file(op, items)
        except Exception as exc:  # noqa: BLE001 - a follower never dies loudly
            log.error("replacement.request_error", extra={
                "replacement": op.id, "error": type(exc).__name__})
        self._follow_loop(op.id)

    def _limits_eta(self, items: list[Item], now: dt.datetime) -> dt.datetime | None:
        """When every issuer's rate limits let its share of ``items`` be ordered and
        issued (the certificates their ACME clients renew are not counted), plus the
        fleet's delivery time when any has nodes to be verified on; None when no limit
        holds any back."""
        shares = collections.Counter(i.issuer_name for i in items
                                     if not i.client and i.issuer_name)
        issuers = self._issuers()
        ends = []
        for name, count in shares.items():
            try:
                ends.append(governed_issuer.eta(issuers, name, count, now))
            except KeyError:  # an issuer no longer configured: nothing to reckon with
                continue
        latest = max(ends, default=now)
        if latest <= now:
            return None
        return latest + self._delivery if any(i.nodes for i in items) else latest

    def started(self, op: Operation) -> dict[str, Any]:
        """The answer to a start, without reading every status again: at the start every
        certificate is pending or awaiting its client, by definition."""
        items = [i for chunk, _ in self._chunks(op) for i in chunk]
        states = [ItemState.AWAITING_CLIENT if i.client else ItemState.PENDING
                  for i in items]
        return Snapshot(op, [], policy.progress(states, op.revoke_old, op.created_at,
                                                self._clock.now()),
                        self._clock.now()).to_json(with_items=False)

    def _authorize(self, caller: Lister, items: list[Item], actor: str) -> None:
        """Vault decides, on the caller's token: ``update`` on every selected spec."""
        paths = self._store.paths
        refused: list[str] = []
        for start in range(0, len(items), 200):
            asked = {paths.api_path(paths.spec(CertificateRef.parse_id(i.id))): i.id
                     for i in items[start:start + 200]}
            caps = caller.capabilities_of(list(asked))
            refused += [cid for path, cid in asked.items()
                        if not caps.get(path, set()) & {"update", "create", "root"}]
        if refused:
            audited(self._audit, actor, "replacement.start", "-", "denied",
                    reason=f"no update on {len(refused)} selected certificate(s)",
                    details={"refused": refused[:50]})
            raise AccessDenied(f"your Vault token may not renew {len(refused)} of the "
                               f"{len(items)} selected certificates (needs update on each "
                               f"spec), e.g. {', '.join(refused[:5])}; nothing was started",
                               refused=refused[:50])

    def _request_all(self, op: Operation, items: list[Item]) -> None:
        """File every item's renewal request, most urgent first, side by side (each
        issuance is queued as its request is in: the issuance pool is first in, first
        out). The actor names the operation: it shows in the status
        (``renewal_request.by``) and in each ``certificate.renew.requested`` audit
        event. A certificate already replaced since its selection gets none."""
        actor = f"{op.created_by} (replacement {op.id})"

        def one(item: Item) -> None:
            try:
                self._renew(CertificateRef.parse_id(item.id), actor, item.serial)
            except CertlockerError as exc:  # the operation shows it; the rest go on
                log.warning("replacement.request_failed", extra={
                    "replacement": op.id, "certificate": item.id, "error": exc.detail})

        list(self._pool.map(one, items))

    def _mark(self, op_id: str, change: Callable[[Operation], Operation]) -> Operation:
        path = self._store.paths.replacement(op_id)

        def read() -> tuple[Operation | None, int]:
            doc, version = self._store.read_json(path)
            return (Operation.from_json(doc) if doc else None), version

        def apply(old: Operation | None) -> Operation:
            if old is None:
                raise NotFound(f"no replacement {op_id}")
            return change(old)

        return cas.patch(read, apply, lambda new, v: self._store.write_json(
            path, new.to_json(), cas=v))

    # -- reading -------------------------------------------------------------------------
    def operation(self, op_id: str) -> Operation:
        """:raises NotFound:"""
        doc, _ = self._store.read_json(self._store.paths.replacement(op_id))
        if not doc:
            raise NotFound(f"no replacement {op_id[:64]}")
        return Operation.from_json(doc)

    def ids(self) -> list[str]:
        names = self._store.list(self._store.paths.replacements_dir())
        return sorted(n for n in names if "/" not in n and "-" not in n)

    def _chunks(self, op: Operation) -> list[tuple[list[Item], int]]:
        paths = self._store.paths

        def read(index: int) -> tuple[list[Item], int]:
            doc, version = self._store.read_json(paths.replacement_chunk(op.id, index))
            return [Item.from_json(i) for i in (doc or {}).get("items") or ()], version

        return list(self._pool.map(read, range(op.chunks)))

    def snapshot(self, op_id: str, op: Operation | None = None) -> Snapshot:
        """The operation and each certificate's state, from the statuses as they are now.

        :raises NotFound:"""
        op = op or self.operation(op_id)
        items = [i for chunk, _ in self._chunks(op) for i in chunk]
        with self._lock:
            memo = self._memos.get(op.id) or _Memo()
            settled, declared_at = dict(memo.verified), dict(memo.declared_at)
        looked = time.monotonic()

        def facts(item: Item) -> tuple[CertificateStatus | None, bool]:
            if item.revoked_at is not None or \
                    item.revoke_attempts >= policy.MAX_REVOKE_ATTEMPTS:
                return None, True  # final from its own record: no status to read
            if item.id in settled:
                return settled[item.id], True
            ref = CertificateRef.parse_id(item.id)
            found = self._store.read_status(ref)
            status = found[0] if found else None
            declared = True
            if (status is None or status.current is None
                    or status.current.serial == item.serial) \
                    and looked - declared_at.get(item.id, -DECLARED_RECHECK) \
                    >= DECLARED_RECHECK:
                declared = self._store.read_spec(ref) is not None
                if declared:
                    declared_at[item.id] = looked
            return status, declared

        now = self._clock.now()
        rows = []
        for item, (status, declared) in zip(items, self._pool.map(facts, items), strict=True):
            rows.append((item, policy.classify(item, status, declared, op.created_at),
                         status))
        self._remember(op, rows, declared_at)
        return Snapshot(op, rows, policy.progress([s for _, s, _ in rows], op.revoke_old,
                                                  op.created_at, now), now)

    def _remember(self, op: Operation,
                  rows: list[tuple[Item, ItemState, CertificateStatus | None]],
                  declared_at: dict[str, float]) -> None:
        """Remember the statuses of items seen verified (their replacement is done; what
        follows, a revocation, is in the item's own record) and when specs were seen,
        so the next look at a large operation reads only the statuses still moving and
        a spec at most every ``DECLARED_RECHECK`` seconds."""
        if op.state == DONE:
            return
        with self._lock:
            memo = self._memos.setdefault(op.id, _Memo())
            self._memos.move_to_end(op.id)
            memo.verified.update((item.id, status) for item, state, status in rows
                                 if state is ItemState.VERIFIED and status is not None)
            memo.declared_at.update(declared_at)
            while len(self._memos) > REMEMBERED_OPERATIONS:
                self._memos.popitem(last=False)

    def summary(self, caller: Lister, op_id: str) -> dict[str, Any] | None:
        """One operation as a listing shows it (no per-certificate rows), or None when
        the caller may not see it. A finished operation is shown with the counts it
        ended with, so listing history reads no certificate's status.

        :raises NotFound:"""
        op = self.operation(op_id)
        items = [i for chunk, _ in self._chunks(op) for i in chunk]
        if not self._may_read(caller, [i.id for i in items]):
            return None
        if op.state != DONE or op.final is None:
            return self.snapshot(op_id, op).to_json(with_items=False)
        counts = {s.value: int(op.final.get(s.value, 0)) for s in policy.STATES}
        states = [state for state in policy.STATES for _ in range(counts[state.value])]
        done = Snapshot(op, [], policy.progress(states, op.revoke_old, op.created_at,
                                                op.done_at or op.created_at),
                        op.done_at or op.created_at)
        return done.to_json(with_items=False)

    def may_see(self, caller: Lister, snapshot: Snapshot) -> bool:
        """Whether the caller may read every certificate of the operation (Vault
        decides: ``read`` on each spec)."""
        return self._may_read(caller, [item.id for item, _, _ in snapshot.items])

    def _may_read(self, caller: Lister, ids: list[str]) -> bool:
        paths = self._store.paths
        for start in range(0, len(ids), 200):
            asked = [paths.api_path(paths.spec(CertificateRef.parse_id(i)))
                     for i in ids[start:start + 200]]
            caps = caller.capabilities_of(asked)
            if any(not caps.get(p, set()) & {"read", "root"} for p in asked):
                return False
        return True

    # -- following -----------------------------------------------------------------------
    def advance(self, op_id: str) -> Snapshot | None:
        """One step of a running operation, from its records and the statuses: file the
        renewal requests a crash left unfiled, re-verify nodes of issued certificates
        (when a verifier is given), revoke old certificates now served nowhere (with
        ``revoke_old``), and mark the operation done once every certificate is final.
        Safe to run in several processes at once (check-and-set claims). None when the
        operation is already done."""
        op = self.operation(op_id)
        if op.state == DONE:
            return None
        snap = self.snapshot(op_id, op)
        # Only a stored certificate answers a renewal request (a failure keeps it), so a
        # certificate still on its old serial without one never had it recorded: a crash
        # during the start, or a write that failed. File it now.
        missing = [item for item, state, status in snap.items
                   if state in (ItemState.PENDING, ItemState.AWAITING_CLIENT,
                                ItemState.FAILING)
                   and status is not None and status.renewal_request is None]
        if missing:
            self._request_all(op, missing)
        if not op.requested:
            op = self._mark(op_id, lambda o: dataclasses.replace(o, requested=True))
        if self._verifier is not None:
            self._verify_issued(snap)
        if op.revoke_old:
            if self._revoke_old(op, snap):
                snap = self.snapshot(op_id, op)
        if snap.progress.done:
            self._finish(op, snap)
        return snap

    def _verify_issued(self, snap: Snapshot) -> None:
        verifier = self._verifier
        assert verifier is not None
        due = []
        now = time.monotonic()
        with self._lock:
            for item, state, _ in snap.items:
                if state is ItemState.ISSUED and item.nodes and \
                        now - self._verified_at.get(item.id, 0.0) >= VERIFY_EVERY:
                    self._verified_at[item.id] = now
                    due.append(item)

        def verify(item: Item) -> None:
            try:
                verifier.verify_certificate(CertificateRef.parse_id(item.id),
                                            actor="replacement", only_when_delivered=True)
            except CertlockerError:
                pass  # a result for the next look; the reconciler verifies too

        list(self._pool.map(verify, due))

    def _revoke_old(self, op: Operation, snap: Snapshot) -> bool:
        """Revoke, chunk by chunk, every old certificate whose replacement is served on
        every node. True when anything was tried (the snapshot is stale)."""
        now = self._clock.now()
        states = {item.id: state for item, state, _ in snap.items}
        serials = {item.id: status.current.serial for item, _, status in snap.items
                   if status is not None and status.current is not None}
        tried = False
        for index in range(op.chunks):
            tried = self._revoke_chunk(op, index, states, serials, now) or tried
        return tried

    def _revoke_chunk(self, op: Operation, index: int, states: Mapping[str, ItemState],
                      serials: Mapping[str, str], now: dt.datetime) -> bool:
        """Claim (check-and-set on the chunk, so of two processes one revokes), revoke
        at the CA, record each result. A claim left by a dead process goes stale after
        ``CLAIM_TIMEOUT``; revoking twice is harmless (already revoked counts)."""
        path = self._store.paths.replacement_chunk(op.id, index)
        claimed: list[Item] = []

        def claim(doc: dict[str, Any] | None) -> dict[str, Any]:
            claimed.clear()
            out = []
            for raw in (doc or {}).get("items") or ():
                item = Item.from_json(raw)
                if policy.revocable(item, states.get(item.id, ItemState.PENDING), now,
                                    CLAIM_TIMEOUT):
                    item = item.replace(revoking_since=now)
                    claimed.append(item)
                out.append(item.to_json())
            if not claimed:
                raise cas.Unchanged(doc)
            return {"items": out}

        try:
            self._patch_chunk(path, claim)
        except Conflict:
            return False  # another process is at it; the next step looks again
        if not claimed:
            return False
        results = dict(self._pool.map(lambda i: (i.id, self._revoke_one(op, i)), claimed))
        at = self._clock.now()

        def record(doc: dict[str, Any] | None) -> dict[str, Any]:
            out = []
            for raw in (doc or {}).get("items") or ():
                item = Item.from_json(raw)
                if item.id in results:
                    error = results[item.id]
                    item = item.replace(revoking_since=None, revoke_error=error)
                    item = item.replace(revoke_attempts=item.revoke_attempts + 1) if error \
                        else item.replace(revoked_at=at, replaced_by=serials.get(item.id))
                out.append(item.to_json())
            return {"items": out}

        self._patch_chunk(path, record)
        return True

    def _patch_chunk(self, path: str,
                     change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> None:
        cas.patch(lambda: self._store.read_json(path), change,
                  lambda new, v: self._store.write_json(path, new, cas=v))

    def _revoke_one(self, op: Operation, item: Item) -> str | None:
        """Revoke the old certificate at the CA that issued it; the error, or None."""
        issuer = self._issuers().get(item.issuer_name or "")
        details = {"serial": item.serial, "reason": op.revocation_reason,
                   "replacement": op.id, "sha256_fingerprint": item.sha256}
        if not isinstance(issuer, Revoker) or item.leaf_pem is None:
            error = f"issuer {item.issuer_name!r} is not configured or cannot revoke"
        else:
            try:
                issuer.revoke(item.leaf_pem, REASONS[op.revocation_reason])
                audited(self._audit, self._actor, "certificate.revoke", item.id, "success",
                        details=details)
                return None
            except CertlockerError as exc:
                error = exc.detail[:500]
        audited(self._audit, self._actor, "certificate.revoke", item.id, "failure",
                reason=error, details=details)
        return error

    def _finish(self, op: Operation, snap: Snapshot) -> None:
        marked: list[bool] = []

        def done(old: Operation) -> Operation:
            if old.state == DONE:
                raise cas.Unchanged(old)
            marked.append(True)
            return dataclasses.replace(old, state=DONE, done_at=self._clock.now(),
                                       final=snap.progress.counts)

        self._mark(op.id, done)
        self._forget_running(op.id)
        with self._lock:
            self._memos.pop(op.id, None)
        if marked:
            audited(self._audit, self._actor, "replacement.done", op.id, "success",
                    details={"count": op.selected, "counts": snap.progress.counts,
                             "seconds": round((self._clock.now() - op.created_at)
                                              .total_seconds(), 1)})
            log.info("replacement.done", extra={"replacement": op.id,
                                                "counts": snap.progress.counts})

    def running_ids(self) -> list[str]:
        """The operations marked running (one listing, whatever the history)."""
        names = self._store.list(self._store.paths.replacements_running_dir())
        return sorted(n for n in names if "/" not in n)

    def _forget_running(self, op_id: str) -> None:
        try:
            self._store.destroy(self._store.paths.replacement_running(op_id))
        except NotFound:
            pass

    def _drop_orphan(self, op_id: str) -> None:
        """A marker whose record was never written (a crash between the two) goes once
        it is older than ``CLAIM_TIMEOUT``; a younger one may be a start under way."""
        doc, _ = self._store.read_json(self._store.paths.replacement_running(op_id))
        at = (doc or {}).get("at")
        if not isinstance(at, str) or self._clock.now() - parse_rfc3339(at) > CLAIM_TIMEOUT:
            self._forget_running(op_id)

    def advance_all(self) -> int:
        """``advance`` every running operation (the reconciler, each tick); how many
        were running. One that fails is logged and left for the next call."""
        running = 0
        for op_id in self.running_ids():
            try:
                if self.advance(op_id) is not None:
                    running += 1
                else:  # done (a marker a crash left behind)
                    self._forget_running(op_id)
            except NotFound:
                self._drop_orphan(op_id)
            except CertlockerError as exc:
                log.warning("replacement.advance_failed", extra={
                    "replacement": op_id, "error": type(exc).__name__,
                    "detail": exc.detail})
        return running

    def _follow_loop(self, op_id: str) -> None:
        """The starting process follows its operation until done (or ``follow_for``
        passes, or it stops): the reconciler's ticks do the same from the records."""
        deadline = time.monotonic() + self._follow_for
        try:
            moving = self.operation(op_id).selected
        except CertlockerError:
            moving = 0
        # Each look reads the status of every item not yet verified: a large operation
        # is looked at less often, so following it costs Vault about
        # FOLLOW_READS_PER_SECOND, not more.
        while time.monotonic() < deadline and not self._stop.wait(
                max(self._follow_every, moving / FOLLOW_READS_PER_SECOND)):
            try:
                snap = self.advance(op_id)
                if snap is None:
                    return
                moving = sum(1 for _, state, _ in snap.items if state not in SETTLED)
            except CertlockerError as exc:
                log.warning("replacement.follow_failed", extra={
                    "replacement": op_id, "error": type(exc).__name__})
            except Exception as exc:  # noqa: BLE001 - a follower never dies loudly
                log.error("replacement.follow_error", extra={
                    "replacement": op_id, "error": type(exc).__name__})
                return

    def counts(self) -> dict[str, int]:
        """Certificates per state over every running operation (the metrics gauge)."""
        total = {s.value: 0 for s in policy.STATES}
        for op_id in self.running_ids():
            try:
                op = self.operation(op_id)
                if op.state == DONE:
                    continue
                for state, n in self.snapshot(op_id, op).progress.counts.items():
                    total[state] += n
            except CertlockerError:
                continue
        return total

    def shutdown(self) -> None:
        self._stop.set()

