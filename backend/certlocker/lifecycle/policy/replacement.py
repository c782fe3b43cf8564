"""Mass replacement, the pure part: which certificates a selector picks, in which order
they go, and how far each has come (``lifecycle.replacements`` does the I/O).

A replacement operation replaces every selected certificate, most urgent first, and is
followed from facts only: each certificate's state is derived from its status as it is
now, compared with what it was at selection (its serial and fingerprint then).

    pending | awaiting-client | failing  ->  issued  ->  verified  ->  revoked

``pending``: no new certificate yet. ``awaiting-client``: the key is held by a client
of certlocker's ACME server, which must order the replacement itself (its renewal window
moved to now). ``failing``: still the old certificate, and an attempt after the
operation started failed (it is retried as any renewal is). ``issued``: a new serial is
current. ``verified``: every node of every target serves the new certificate (no
targets: as soon as it is issued). ``revoked``: the old certificate is revoked at the CA
(only with ``revoke_old``). ``gone``: the certificate was retired or its spec deleted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import fnmatch
from typing import Any, Collection, Iterable, Mapping, Sequence

from ...clock import parse_rfc3339, rfc3339
from ...errors import InvalidInput
from ...models import CertificateSpec, CertificateStatus, State, TargetStatus

SELECTOR_FIELDS = ("issuer", "issuing_intermediate", "serials", "names", "environment",
                   "service", "all")
REQUEST_FIELDS = frozenset(SELECTOR_FIELDS) | {"revoke_old", "reason", "revocation_reason"}
MAX_SERIALS = 10_000
MAX_REASON = 500
OK = "ok"  # a node's verification result when it serves the expected certificate


class ItemState(enum.StrEnum):
    PENDING = "pending"
    AWAITING_CLIENT = "awaiting-client"
    FAILING = "failing"
    ISSUED = "issued"
    VERIFIED = "verified"
    REVOKED = "revoked"
    REVOKE_FAILED = "revoke-failed"
    GONE = "gone"


#: the order states are shown in (counts, the CLI's bar)
STATES: tuple[ItemState, ...] = tuple(ItemState)


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which certificates: every given criterion must hold (they combine with AND).
    ``all`` alone selects the whole inventory the caller may list."""

    issuer: str | None = None  # a configured issuer's name (spec.issuer)
    issuing_intermediate: str | None = None  # issuer DN substring, or a SHA-256 (hex)
    serials: frozenset[str] | None = None  # current serials, lowercase hex, no colons
    names: str | None = None  # a glob over dns_names (any name matching selects)
    environment: str | None = None
    service: str | None = None
    all: bool = False

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for field in SELECTOR_FIELDS:
            value = getattr(self, field)
            if field == "serials" and value is not None:
                value = sorted(value)
            if value not in (None, False):
                body[field] = value
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Selector":
        serials = data.get("serials")
        return cls(issuer=data.get("issuer"), issuing_intermediate=data.get(
            "issuing_intermediate"), serials=frozenset(serials) if serials is not None
            else None, names=data.get("names"), environment=data.get("environment"),
            service=data.get("service"), all=bool(data.get("all")))


@dataclasses.dataclass(frozen=True)
class Request:
    """A validated ``POST /v1/replacements`` body."""

    selector: Selector
    revoke_old: bool = False
    reason: str | None = None  # the operator's words, kept in the record and audit
    revocation_reason: str = "superseded"  # RFC 5280 name, checked by the caller


def normalize_serial(serial: str) -> str:
    """``01:AB:cd`` and ``0x1abcd`` and ``1abcd`` all name the same serial."""
    s = serial.strip().lower().replace(":", "")
    if s.startswith("0x"):
        s = s[2:]
    return s.lstrip("0") or "0"


def _is_sha256(value: str) -> bool:
    v = value.replace(":", "").lower()
    return len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def parse_request(body: Mapping[str, Any], issuers: Collection[str],
                  environments: Collection[str]) -> Request:
    """Validate a request body.

    :raises InvalidInput: naming the field that is wrong: an unknown field, no criterion
        at all, ``all`` beside another criterion, an issuer that is not configured, an
        unknown environment, a service without its environment, a malformed glob or
        serial list.
    """
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0][:64], "is not a field of a replacement request")
    given = [f for f in SELECTOR_FIELDS if f in body and body[f] is not None]
    if not given:
        raise InvalidInput("selector", "name at least one of " + ", ".join(SELECTOR_FIELDS)
                           + " (all: true selects every certificate you may list)")
    everything = body.get("all")
    if "all" in given:
        if everything is not True:
            raise InvalidInput("all", "must be true when given")
        if len(given) > 1:
            raise InvalidInput("all", "selects everything: give it alone")
    issuer = _text(body, "issuer", 64)
    if issuer is not None and issuer not in issuers:
        raise InvalidInput("issuer", "must be one of the configured issuers: "
                           + ", ".join(sorted(issuers)))
    intermediate = _text(body, "issuing_intermediate", 1024)
    if intermediate is not None and _is_sha256(intermediate):
        intermediate = intermediate.replace(":", "").lower()
    names = _text(body, "names", 253)
    if names is not None and not all(c.isalnum() or c in "-.*?[]!_" for c in names):
        raise InvalidInput("names", "must be a glob over DNS names (letters, digits, "
                           "'-', '.', and * ? [ ] !)")
    environment = _text(body, "environment", 64)
    if environment is not None and environment not in environments:
        raise InvalidInput("environment", "must be one of " + ", ".join(environments))
    service = _text(body, "service", 64)
    if service is not None and environment is None:
        raise InvalidInput("service", "needs environment beside it")
    serials = body.get("serials")
    parsed: frozenset[str] | None = None
    if serials is not None:
        if (not isinstance(serials, list) or not serials or len(serials) > MAX_SERIALS
                or not all(isinstance(s, str) and 0 < len(s) <= 128 for s in serials)):
            raise InvalidInput("serials", f"must be a list of 1 to {MAX_SERIALS} serials "
                               "(hex strings)")
        parsed = frozenset(normalize_serial(s) for s in serials)
        if not all(all(c in "0123456789abcdef" for c in s) for s in parsed):
            raise InvalidInput("serials", "each serial must be hexadecimal")
    revoke_old = body.get("revoke_old", False)
    if not isinstance(revoke_old, bool):
        raise InvalidInput("revoke_old", "must be true or false")
    reason = _text(body, "reason", MAX_REASON)
    revocation_reason = _text(body, "revocation_reason", 64) or "superseded"
    return Request(Selector(issuer, intermediate, parsed, names, environment, service,
                            everything is True),
                   revoke_old, reason, revocation_reason)


def _text(body: Mapping[str, Any], field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit \
            or not value.isprintable():
        raise InvalidInput(field, f"must be a non-empty string of at most {limit} "
                           "characters")
    return value.strip()


def matches(selector: Selector, spec: CertificateSpec,
            status: CertificateStatus | None) -> bool:
    """Whether ``selector`` picks this certificate. Only a certificate with a current
    (issued, not retired) certificate can be replaced: one still pending is being
    issued anyway."""
    if spec.problem is not None or status is None or status.current is None \
            or status.state is State.RETIRED:
        return False
    current = status.current
    ref = spec.ref
    if selector.environment is not None and ref.environment != selector.environment:
        return False
    if selector.service is not None and ref.service != selector.service:
        return False
    if selector.issuer is not None and spec.issuer != selector.issuer:
        return False
    if selector.serials is not None and \
            normalize_serial(current.serial) not in selector.serials:
        return False
    if selector.names is not None and not any(
            fnmatch.fnmatchcase(n.lower(), selector.names.lower()) for n in spec.dns_names):
        return False
    wanted = selector.issuing_intermediate
    if wanted is not None:
        if _is_sha256(wanted):
            if (current.issuer_sha256 or "").lower() != wanted:
                return False
        elif wanted.lower() not in current.issuer.lower():
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Item:
    """One selected certificate as it was at selection: what "replaced" is measured
    against. ``nodes``: the addresses its targets' nodes are verified at."""

    id: str
    serial: str
    sha256: str
    not_after: dt.datetime
    nodes: tuple[str, ...] = ()
    client: bool = False  # the key is held by an ACME client (spec.acme_order)
    issuer_name: str | None = None  # the configured issuer that issued the old one
    leaf_pem: str | None = dataclasses.field(default=None, repr=False)  # for revoke_old
    revoked_at: dt.datetime | None = None
    revoke_error: str | None = None
    revoke_attempts: int = 0
    revoking_since: dt.datetime | None = None  # a claim: someone is revoking it now
    replaced_by: str | None = None  # the serial current when the old one was revoked

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "serial": self.serial, "sha256": self.sha256,
            "not_after": rfc3339(self.not_after), "nodes": list(self.nodes),
            "client": self.client, "issuer_name": self.issuer_name,
            "leaf_pem": self.leaf_pem,
            "revoked_at": rfc3339(self.revoked_at) if self.revoked_at else None,
            "revoke_error": self.revoke_error, "revoke_attempts": self.revoke_attempts,
            "revoking_since": rfc3339(self.revoking_since) if self.revoking_since else None,
            "replaced_by": self.replaced_by}
        return {k: v for k, v in data.items() if v not in (None, False, 0)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Item":
        def when(key: str) -> dt.datetime | None:
            value = data.get(key)
            return parse_rfc3339(value) if isinstance(value, str) else None

        return cls(id=data["id"], serial=data["serial"], sha256=data["sha256"],
                   not_after=parse_rfc3339(data["not_after"]),
                   nodes=tuple(data.get("nodes") or ()), client=bool(data.get("client")),
                   issuer_name=data.get("issuer_name"), leaf_pem=data.get("leaf_pem"),
                   revoked_at=when("revoked_at"), revoke_error=data.get("revoke_error"),
                   revoke_attempts=int(data.get("revoke_attempts") or 0),
                   revoking_since=when("revoking_since"), replaced_by=data.get("replaced_by"))

    def replace(self, **changes: Any) -> "Item":
        return dataclasses.replace(self, **changes)


def select_item(spec: CertificateSpec, status: CertificateStatus, nodes: Sequence[str],
                keep_leaf: bool) -> Item:
    """The ``Item`` recorded for a matching certificate (``matches`` was true)."""
    current = status.current
    assert current is not None
    item = Item(id=spec.ref.id, serial=current.serial, sha256=current.sha256_fingerprint,
                not_after=current.not_after, nodes=tuple(nodes),
                client=spec.acme_order is not None, issuer_name=current.issuer_name
                or spec.issuer, leaf_pem=current.leaf_pem if keep_leaf else None)
    if keep_leaf and current.leaf_pem is None:
        # Issued before the status kept the leaf: certlocker cannot revoke it later.
        item = item.replace(revoke_error="the old certificate's PEM was not recorded at "
                            "issuance: revoke its serial at the CA by hand",
                            revoke_attempts=MAX_REVOKE_ATTEMPTS)
    return item


def urgency_order(items: Iterable[Item]) -> list[Item]:
    """Most urgent first: the nearest ``not_after``, then the most target nodes (more
    places to go wrong), then by id so the order is stable."""
    return sorted(items, key=lambda i: (i.not_after, -len(i.nodes), i.id))


#: the states after which nothing more happens to a certificate in this operation
def final_states(revoke_old: bool) -> frozenset[ItemState]:
    done = {ItemState.GONE, ItemState.REVOKED, ItemState.REVOKE_FAILED}
    if not revoke_old:
        done.add(ItemState.VERIFIED)
    return frozenset(done)


#: revocation of one old certificate is tried this often before it counts as failed
MAX_REVOKE_ATTEMPTS = 5


def classify(item: Item, status: CertificateStatus | None, declared: bool,
             started: dt.datetime) -> ItemState:
    """Where ``item`` stands now, from its current status (None: no status record) and
    whether its spec is still declared. ``started``: when the operation began (an error
    recorded before it is not this operation's failure)."""
    if item.revoked_at is not None:
        return ItemState.REVOKED
    if item.revoke_attempts >= MAX_REVOKE_ATTEMPTS:
        return ItemState.REVOKE_FAILED
    if not declared or status is None or status.state is State.RETIRED:
        return ItemState.GONE
    current = status.current
    if current is None or current.serial == item.serial:
        if status.last_error and status.updated_at is not None \
                and status.updated_at >= started:
            return ItemState.FAILING
        return ItemState.AWAITING_CLIENT if item.client else ItemState.PENDING
    if delivered(item.nodes, status.targets, current.sha256_fingerprint):
        return ItemState.VERIFIED
    return ItemState.ISSUED


def delivered(nodes: Sequence[str], observed: Sequence[TargetStatus], sha256: str) -> bool:
    """Every node reported ``ok`` serving the certificate ``sha256`` (no nodes: true)."""
    by_address = {t.address: t for t in observed}
    want = _norm(sha256)
    for node in nodes:
        seen = by_address.get(node)
        if seen is None or seen.status != OK or _norm(seen.served_sha256 or "") != want:
            return False
    return True


def _norm(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()


@dataclasses.dataclass(frozen=True)
class Progress:
    """The operation's totals, computed from every item's state."""

    total: int
    counts: dict[str, int]
    finished: int
    eta_seconds: float | None
    done: bool

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "counts": self.counts, "finished": self.finished,
                "eta_seconds": None if self.eta_seconds is None
                else round(self.eta_seconds, 1)}


def progress(states: Sequence[ItemState], revoke_old: bool, started: dt.datetime,
             now: dt.datetime) -> Progress:
    """Counts per state, how many are finished, and a rate-based ETA: the pace so far
    (finished per second since the start) applied to what is left. No ETA before the
    first certificate finishes; 0 once all have."""
    counts = {s.value: 0 for s in STATES}
    for s in states:
        counts[s.value] += 1
    final = final_states(revoke_old)
    finished = sum(1 for s in states if s in final)
    total = len(states)
    left = total - finished
    elapsed = max((now - started).total_seconds(), 0.0)
    eta: float | None
    if left == 0:
        eta = 0.0
    elif finished == 0 or elapsed <= 0:
        eta = None
    else:
        eta = left / (finished / elapsed)
    return Progress(total, counts, finished, eta, left == 0)


def revocable(item: Item, state: ItemState, now: dt.datetime,
              claim_timeout: dt.timedelta) -> bool:
    """With ``revoke_old``: the old certificate may be revoked now: the new one is served
    on every node, it is not revoked yet, and nobody claimed it (or a claim is stale)."""
    return (state is ItemState.VERIFIED and item.revoked_at is None
            and item.leaf_pem is not None
            and (item.revoking_since is None or now - item.revoking_since > claim_timeout))
