"""Served-certificate verification of one certificate, wired end to end.

``Verifier.verify_certificate(ref)`` probes every target of the certificate's spec
(every node of a pool separately, ``delivery.verify.verify_targets``), compares what each
node serves with the current certificate and its history, writes the per-node results
into ``status.targets`` (check-and-set), records one ``delivery.verify`` audit event and
reports divergence that has outlasted the grace period after delivery. The API calls it
on request; the reconciler calls it on a schedule.

The decisions are pure functions (``target_views``, ``worst``, ``divergent``,
``audit_details``); the orchestrator gets its ports (store, status writer, probe, trust
anchors, auditor, clock, divergence hook) in its constructor. No Flask, no hvac.

Only targets inside the administrator's allow-list are probed (``policy``): the others
are reported ``forbidden`` with the reason and never contacted, and the probe re-checks
each name's resolved addresses before it connects (``delivery.verify.under_policy``).

Delivery time is the current certificate's ``not_before``: for ACME CAs that is the
moment of issuance (Let's Encrypt backdates it by an hour, which only shortens the grace).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock, rfc3339
from ..delivery import target_policy
from ..delivery import verify as probes
from ..delivery.target_policy import FORBIDDEN, TargetPolicy
from ..errors import Conflict, NotFound
from ..models import CertificateInfo, CertificateRef, CertificateStatus, Target, TargetStatus
from ..ports import Probe, Store

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
#: a retired certificate's nodes (lifecycle.retirement): still serving it, or not
SERVING_RETIRED, CLEAR = "serving-retired", "clear"
#: shown for a node whose last result predates the current certificate (``outdated``)
UNVERIFIED = "unverified"
#: worst first: the status a pool shows is the worst status of its nodes
SEVERITY = (SERVING_RETIRED, probes.EXPIRED, probes.MISMATCH, probes.STALE,
            probes.UNREACHABLE, probes.CHAIN_INCOMPLETE, FORBIDDEN, UNKNOWN, UNVERIFIED,
            CLEAR, probes.OK)
#: a forbidden node was never contacted: nothing is known about its delivery
DIVERGENT = frozenset(SEVERITY) - {probes.OK, UNKNOWN, UNVERIFIED, CLEAR, FORBIDDEN}
#: per-node entries kept in one audit event (details are capped at 8 KiB)
MAX_AUDITED_NODES = 40

StatusChange = Callable[[CertificateStatus | None], CertificateStatus]
PolicySource = Callable[[], TargetPolicy]


class DivergenceHook(Protocol):
    """Called with the nodes that still serve the wrong certificate after the grace
    period; ``lifecycle.alerts`` (or anything else) turns it into an alert."""

    def __call__(self, ref: CertificateRef, divergent: Sequence[TargetStatus],
                 delivered_at: dt.datetime) -> None: ...


# -- pure decisions -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TargetView:
    """One spec target with what was observed: a pool's status is its worst node's."""

    target: Target
    status: str
    served_sha256: str | None
    checked_at: dt.datetime | None
    nodes: tuple[TargetStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.target.address,
            "sni": self.target.sni,
            "ips": list(self.target.ips),
            "status": self.status,
            "served_sha256": self.served_sha256,
            "checked_at": rfc3339(self.checked_at) if self.checked_at else None,
            # why the target has its status: the reason given for a node that has it
            "detail": next((n.detail for n in self.nodes
                            if n.status == self.status and n.detail), None),
            "nodes": [n.to_json() for n in self.nodes] if self.target.ips else [],
        }


def node_addresses(target: Target) -> list[str]:
    """The addresses ``verify_targets`` reports for ``target``: ``ip:port`` per pool node,
    else the target's own address."""
    if not target.ips:
        return [target.address]
    try:
        _, port = probes.split_address(target.address)
    except ValueError:
        return [target.address]
    return [probes.join_address(ip, port) for ip in target.ips]


def worst(statuses: Iterable[str]) -> str:
    """The most severe status (``SEVERITY``); ``unknown`` for none."""
    rank = {s: i for i, s in enumerate(SEVERITY)}
    found = list(statuses)
    if not found:
        return UNKNOWN
    return min(found, key=lambda s: rank.get(s, rank[UNKNOWN]))


def outdated(node: TargetStatus, current: CertificateInfo | None) -> bool:
    """Was this node's result judged against another certificate than ``current``?

    True when it was checked before ``current`` existed (its ``not_before``), or when
    what it says contradicts ``current``: ``ok``/``chain-incomplete`` for a leaf that is
    not ``current``, ``stale``/``mismatch`` for one that is. Such a result is a fact
    about an earlier certificate, never a reason to show ``ok`` now."""
    if current is None or node.status == UNKNOWN:
        return False
    if node.checked_at is None or node.checked_at < current.not_before:
        return True
    serves_current = (node.served_sha256 or "").lower() == _hex(current.sha256_fingerprint)
    if node.status in (probes.OK, probes.CHAIN_INCOMPLETE):
        return not serves_current
    if node.status in (probes.STALE, probes.MISMATCH):
        return serves_current
    return False


def shown_node(node: TargetStatus, current: CertificateInfo | None) -> TargetStatus:
    """``node`` as it may be shown beside ``current``: ``unverified`` (its checked_at and
    served leaf kept, ``detail`` saying what it last was) when ``outdated``."""
    if not outdated(node, current):
        return node
    return dataclasses.replace(node, status=UNVERIFIED, detail=(
        f"last result ({node.status}) predates the current certificate; "
        "a new check is scheduled"))


def target_views(targets: Sequence[Target], observed: Sequence[TargetStatus],
                 current: CertificateInfo | None = None) -> list[TargetView]:
    """Group observed node results under the spec targets they belong to; a node never
    observed counts as ``unknown``, one whose result predates ``current`` (when given)
    as ``unverified``."""
    by_address = {t.address: t for t in observed}
    views = []
    for target in targets:
        nodes = tuple(shown_node(by_address.get(a) or TargetStatus(a, UNKNOWN), current)
                      for a in node_addresses(target))
        served = {n.served_sha256 for n in nodes}
        checked = [n.checked_at for n in nodes if n.checked_at is not None]
        views.append(TargetView(
            target, worst(n.status for n in nodes),
            next(iter(served)) if len(served) == 1 else None,
            max(checked) if checked else None, nodes))
    return views


def screen(targets: Sequence[Target], policy: TargetPolicy,
           now: dt.datetime) -> tuple[tuple[Target, ...], list[TargetStatus]]:
    """Split ``targets`` into what may be probed and a ``forbidden`` result for every node
    that may not (a pool keeps its allowed nodes). Names are not resolved here: the
    probe checks the addresses it is about to dial."""
    allowed: list[Target] = []
    refused: list[TargetStatus] = []
    for target in targets:
        whole = target_policy.check_target(policy, dataclasses.replace(target, ips=()))
        if whole is not None or not target.ips:
            if whole is None:
                allowed.append(target)
            else:
                refused += [TargetStatus(a, FORBIDDEN, None, now, whole.reason)
                            for a in node_addresses(target)]
            continue
        _, port = probes.split_address(target.address)
        keep = []
        for ip, address in zip(target.ips, node_addresses(target), strict=True):
            refusal = target_policy.check(policy, ip, port)
            if refusal is None:
                keep.append(ip)
            else:
                refused.append(TargetStatus(address, FORBIDDEN, None, now, refusal.reason))
        if keep:
            allowed.append(dataclasses.replace(target, ips=tuple(keep)))
    return tuple(allowed), refused


def divergent(status: CertificateStatus, now: dt.datetime,
              grace: dt.timedelta) -> list[TargetStatus]:
    """Nodes still not serving the current certificate (properly) ``grace`` after it was
    delivered; empty while within the grace period or when nothing is issued."""
    if status.current is None or now - status.current.not_before < grace:
        return []
    return [t for t in status.targets if t.status in DIVERGENT]


def audit_details(current: CertificateInfo, results: Sequence[TargetStatus]) -> dict[str, Any]:
    """Per-node outcome for the audit event: addresses, statuses and fingerprints only,
    divergent nodes first, at most ``MAX_AUDITED_NODES`` of them."""
    ordered = sorted(results, key=lambda r: r.status == probes.OK)
    return {
        "sha256_fingerprint": current.sha256_fingerprint,
        "counts": dict(sorted(Counter(r.status for r in results).items())),
        "targets": [{"address": r.address, "status": r.status,
                     "served_sha256": r.served_sha256}
                    for r in ordered[:MAX_AUDITED_NODES]],
        "truncated": max(0, len(results) - MAX_AUDITED_NODES),
    }


def summary(results: Sequence[TargetStatus]) -> str | None:
    """``"2 stale, 1 mismatch"`` for the divergent nodes, None when all are ok."""
    counts = Counter(r.status for r in results if r.status != probes.OK)
    if not counts:
        return None
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def verification_due(spec_targets: Sequence[Target], status: CertificateStatus | None,
                     now: dt.datetime, interval: dt.timedelta) -> bool:
    """Should a scheduled pass verify this certificate now? When it has targets and a
    current certificate, and some node was never checked against that certificate, or
    not within ``interval``."""
    at = next_verification_at(spec_targets, status, now, interval)
    return at is not None and at <= now


def next_verification_at(spec_targets: Sequence[Target], status: CertificateStatus | None,
                         now: dt.datetime, interval: dt.timedelta) -> dt.datetime | None:
    """When a scheduled pass should next verify this certificate; None when it has no
    targets or no current certificate. ``now`` after any change (a node never checked,
    or last checked against an earlier certificate); else the oldest check decides."""
    if not spec_targets or status is None or status.current is None:
        return None
    checked = {t.address: t for t in status.targets}
    oldest: dt.datetime | None = None
    for target in spec_targets:
        for address in node_addresses(target):
            node = checked.get(address)
            if node is None or node.checked_at is None or outdated(node, status.current):
                return now
            at = node.checked_at
            oldest = at if oldest is None or at < oldest else oldest
    return max(now, oldest + interval) if oldest is not None else now


def _hex(fingerprint: str) -> str:
    return fingerprint.replace(":", "").strip().lower()


DELIVERY_DIVERGED = "delivery-diverged"


def divergence_alert(ref: CertificateRef, bad: Sequence[TargetStatus],
                     delivered_at: dt.datetime, now: dt.datetime,
                     current: CertificateInfo | None = None) -> Any:
    """An ``alerts.Alert`` (kind ``delivery-diverged``) naming the divergent nodes."""
    from .policy.alerts import Alert

    counts = summary(bad) or "divergent"
    nodes = ", ".join(f"{t.address} {t.status}" for t in list(bad)[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return Alert(certificate=ref.id, kind=DELIVERY_DIVERGED,
                 summary=(f"certlocker: {ref.id} is not served everywhere "
                          f"since delivery at {rfc3339(delivered_at)} ({counts}): {nodes}{more}"),
                 attempts=0, last_error=None,
                 not_after=current.not_after if current else None,
                 next_attempt_at=None, at=now)


class AlertOnDivergence:
    """A ``DivergenceHook`` that sends a ``delivery-diverged`` alert through a notifier
    (``notify.Notifier`` or any ``send(alert)``); the ``Verifier`` calls it when the
    divergent nodes change."""

    def __init__(self, sink: Any, clock: Clock | None = None) -> None:
        self._sink = sink
        self._clock = clock or SystemClock()

    def __call__(self, ref: CertificateRef, divergent: Sequence[TargetStatus],
                 delivered_at: dt.datetime) -> None:
        self._sink.send(divergence_alert(ref, divergent, delivered_at, self._clock.now()))


def load_anchors(pem_paths: Mapping[str, str | None]) -> Callable[[str], probes.TrustAnchors]:
    """Trust anchors per issuer name: the system bundle plus the issuer's ``trust_roots``
    PEM file, re-read when the file changes (a private CA's root may be rotated).

    :raises ValueError: (at verification time) if a configured file holds no certificate.
    """
    cache: dict[str, tuple[float, probes.TrustAnchors]] = {}

    def anchors(issuer: str) -> probes.TrustAnchors:
        path = pem_paths.get(issuer)
        if not path:
            return probes.TrustAnchors.system()
        mtime = Path(path).stat().st_mtime
        hit = cache.get(issuer)
        if hit is None or hit[0] != mtime:
            hit = (mtime, probes.TrustAnchors.from_pem(Path(path).read_bytes()))
            cache[issuer] = hit
        return hit[1]

    return anchors


# -- orchestration ------------------------------------------------------------------------

class _CurrentChanged(Exception):
    pass


class Verifier:
    """Verify one certificate's targets and record the outcome (certlocker's own token).

    ``update_status(ref, change)`` is the check-and-set read-modify-write of the status
    (``CertificateService.update_status``). ``probe`` does the handshakes (in certlocker
    ``delivery.verify.under_policy`` on a pool the composition root made). ``policy``
    answers the target allow-list in
    force (``AllowList``); the composition root always passes one, None (tests of the
    orchestration alone) probes every target.
    """

    def __init__(self, store: Store, update_status: Callable[[CertificateRef, StatusChange],
                                                              CertificateStatus], *,
                 probe: Probe,
                 anchors: Callable[[str], probes.TrustAnchors | None] = lambda _: None,
                 audit: Auditor | None = None, clock: Clock | None = None,
                 timeout: float = 5.0, parallelism: int = 32,
                 grace: dt.timedelta = dt.timedelta(hours=1),
                 on_divergence: DivergenceHook | None = None,
                 actor: str = "certlocker", policy: PolicySource | None = None) -> None:
        self._store = store
        self._policy = policy
        self._update_status = update_status
        self._probe = probe
        self._anchors = anchors
        self._audit = audit or NoAudit()
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._parallelism = parallelism
        self._grace = grace
        self._on_divergence = on_divergence
        self._alerted: dict[CertificateRef, frozenset[tuple[str, str]]] = {}
        self._actor = actor

    def verify_certificate(self, ref: CertificateRef, actor: str | None = None, *,
                           only_when_delivered: bool = False) -> CertificateStatus:
        """Probe the targets of ``ref`` and store the results in its status.

        If a new certificate is stored while the probes run, they are repeated once
        against it (results judged against a replaced certificate would be wrong).

        ``only_when_delivered``: record nothing (no status write, no audit event) unless
        every node serves the current certificate; the status as read is returned. A
        mass replacement's follower looks every few seconds while the agents render,
        and a look before the new certificate arrived is not news: the reconciler's own
        verification records how a node that never gets it stands.

        :raises NotFound: no spec for ``ref``.
        :raises Conflict: nothing issued yet, or the certificate keeps changing.
        """
        for _ in range(2):
            found = self._store.read_spec(ref)
            if found is None:
                raise NotFound(f"no certificate {ref.id}")
            spec = found[0]
            current_status = self._store.read_status(ref)
            status = current_status[0] if current_status else None
            if status is None or status.current is None:
                raise Conflict(f"{ref.id} has no issued certificate to verify yet")
            expected = status.current
            now = self._clock.now()
            targets = tuple(spec.targets)
            results: list[TargetStatus] = []
            if self._policy is not None and targets:
                targets, results = screen(targets, self._policy(), now)
            if targets:
                results += self._probe(expected, status.history, targets, now=now,
                                       timeout=self._timeout, parallelism=self._parallelism,
                                       anchors=self._anchors(spec.issuer))
            if only_when_delivered and any(r.status != probes.OK for r in results):
                return status

            # Called within this iteration only: the loop variables it reads are current.
            def change(old: CertificateStatus | None) -> CertificateStatus:
                if old is None or old.current is None or (
                        old.current.sha256_fingerprint
                        != expected.sha256_fingerprint):  # noqa: B023
                    raise _CurrentChanged()
                return old.replace(targets=tuple(results))  # noqa: B023

            try:
                new = self._update_status(ref, change)
            except _CurrentChanged:
                continue
            self._record(ref, actor or self._actor, expected, results)
            self._alert(ref, new, now)
            return new
        raise Conflict(f"the certificate of {ref.id} changed twice during verification")

    def _record(self, ref: CertificateRef, actor: str, expected: CertificateInfo,
                results: Sequence[TargetStatus]) -> None:
        reason = summary(results)
        audited(self._audit, actor, "delivery.verify", ref.id,
                "failure" if reason else "success", reason=reason,
                details=audit_details(expected, results))
        log.info("delivery.verified", extra={
            "certificate": ref.id, "nodes": len(results), "divergent": reason or "none"})

    def _alert(self, ref: CertificateRef, status: CertificateStatus, now: dt.datetime) -> None:
        """Alert when the set of divergent nodes changes, not on every pass while it
        stays the same (remembered per process: a restarted reconciler tells once more)."""
        bad = divergent(status, now, self._grace)
        seen = frozenset((t.address, t.status) for t in bad)
        if self._alerted.get(ref) == seen:
            return
        self._alerted[ref] = seen
        if not bad or self._on_divergence is None or status.current is None:
            return
        try:
            self._on_divergence(ref, bad, status.current.not_before)
        except Exception as exc:  # noqa: BLE001 - an alert sink never breaks verification
            log.error("delivery.alert_failed", extra={"certificate": ref.id,
                                                       "error": type(exc).__name__})

