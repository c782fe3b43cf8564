"""Discovery wired to the inventory: scans, file findings, unmanaged records, adoption.

Knows nothing of Flask or hvac; talks to Vault through the ``Store`` protocol with
certlocker's own token (operators are authorized by the API before it gets here).

- ``known_fingerprints`` maps every certificate certlocker issued (each status record's
  current certificate and its history) to the certificate id;
- ``record`` classifies what a scan or a file report found against it and stores every
  certificate certlocker did not issue at ``discovered/<sha256>`` (CA certificates found
  in files, e.g. the intermediates of a fullchain file, are counted, not recorded; a
  certificate served on a TLS port is a server's leaf and recorded whatever its CA flag);
- ``start_scan`` runs an endpoint scan in a small per-process pool and keeps its progress
  and result at ``system/discovery/scans/<id>``, so any worker or replica can answer a
  poll.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Collection, Iterable, Sequence

from .. import cas
from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock, parse_rfc3339, rfc3339
from ..delivery.target_policy import TargetPolicy
from ..errors import CertlockerError, Conflict, NotFound
from ..fanout import bounded_map
from ..ports import Store
from ..models import CertificateRef, State
from .files import FoundCertificate
from .records import ADOPTED, Adoption, Discovery, merge
from .scan import DEFAULT_EXPIRING_WITHIN, Endpoint, ScanError, match_inventory, \
    scan_endpoints

log = logging.getLogger(__name__)

MAX_LISTED = 1000  # found items named in one scan document; counts are always complete
PROGRESS_EVERY = 1.0  # seconds between progress writes to Vault


class KnownFingerprints(dict[str, str]):
    """Fingerprint -> certificate id, and the ids of the certificates that are retired:
    a node serving one of those serves a certificate nobody manages any more."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = (),
                 retired: Iterable[str] = ()) -> None:
        super().__init__()
        for fp, cert_id in pairs:
            self.setdefault(fp, cert_id)
        self.retired = set(retired)


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What one batch of findings amounted to."""

    managed: tuple[tuple[str, str, str], ...]  # (fingerprint, certificate id, source)
    unmanaged: tuple[Discovery, ...]  # the records as stored after this batch
    unmanaged_sources: tuple[tuple[str, str], ...]  # (fingerprint, source) seen now
    ca_certificates: int
    errors: Counter[str]
    error_samples: tuple[dict[str, Any], ...]
    retired: tuple[tuple[str, str, str], ...] = ()  # (fingerprint, certificate id, source)

    def to_json(self, now: dt.datetime, expiring_within: dt.timedelta) -> dict[str, Any]:
        by_fp = {d.sha256_fingerprint: d for d in self.unmanaged}
        return {
            "managed": [{"sha256_fingerprint": fp, "certificate_id": cid, "source": src}
                        for fp, cid, src in self.managed[:MAX_LISTED]],
            "unmanaged": [{**_brief(by_fp[fp], now, expiring_within), "source": src}
                          for fp, src in self.unmanaged_sources[:MAX_LISTED]],
            "retired": [{"sha256_fingerprint": fp, "certificate_id": cid, "source": src}
                        for fp, cid, src in self.retired[:MAX_LISTED]],
            "counts": {"managed": len(self.managed),
                       "retired": len(self.retired),
                       "unmanaged": len(self.unmanaged_sources),
                       "ca_certificates": self.ca_certificates,
                       "errors": sum(self.errors.values())},
            "errors": dict(self.errors),
            "error_samples": list(self.error_samples),
        }


@dataclasses.dataclass(frozen=True)
class DiscoveryPools:
    """The executors discovery runs on, made by the composition root. Three, because
    they nest: a scan (on ``scans``) fans its handshakes out on ``handshakes`` and then
    reads the inventory on ``reads``; none waits on the pool it runs on."""

    #: whole scans in the background (two at a time in certlocker)
    scans: cf.Executor
    #: the TLS handshakes of running scans (each keeps its ``parallelism`` in flight)
    handshakes: cf.Executor
    #: status and discovery records read side by side (``read_workers`` per call)
    reads: cf.Executor


class DiscoveryService:
    def __init__(self, store: Store, pools: DiscoveryPools, *, audit: Auditor | None = None,
                 clock: Clock | None = None,
                 expiring_within: dt.timedelta = DEFAULT_EXPIRING_WITHIN,
                 read_workers: int = 8,
                 policy: Callable[[], TargetPolicy] | None = None) -> None:
        """``policy`` answers the target allow-list in force; the API always passes one
        (None, for tests of the bookkeeping alone, scans anything). ``read_workers``:
        the reads one call keeps in flight on ``pools.reads``."""
        self._store = store
        self._policy = policy
        self._audit = audit or NoAudit()
        self._clock = clock or SystemClock()
        self.expiring_within = expiring_within
        self._read_workers = read_workers
        self._pools = pools
        self._scans = pools.scans

    # -- the inventory side -------------------------------------------------------------
    def known_fingerprints(self) -> KnownFingerprints:
        """SHA-256 fingerprint -> certificate id of everything certlocker issued that is
        still recorded in a status (current and history), with the retired ones named.
        Reads every status record (``read_workers`` at a time): a scan costs one pass
        over the inventory."""
        from ..metrics.summary import iter_refs

        retired: set[str] = set()

        def one(ref: CertificateRef) -> list[tuple[str, str]]:
            try:
                found = self._store.read_status(ref)
            except CertlockerError as exc:
                log.warning("discovery.status_unreadable", extra={
                    "certificate": ref.id, "error": type(exc).__name__})
                return []
            if found is None:
                return []
            status = found[0]
            if status.state is State.RETIRED:
                retired.add(ref.id)
            fps = list(status.history)
            if status.current is not None:
                fps.insert(0, status.current.sha256_fingerprint)
            if status.revocation is not None:
                fps.append(status.revocation.sha256_fingerprint)
            return [(fp.lower(), ref.id) for fp in fps]

        pairs = [pair for found in bounded_map(self._pools.reads, one, iter_refs(self._store),
                                               self._read_workers)
                 for pair in found]
        return KnownFingerprints(pairs, retired)

    # -- recording ----------------------------------------------------------------------
    def record(self, found: Iterable[FoundCertificate | ScanError],
               known: dict[str, str] | None = None) -> Recorded:
        """Classify ``found`` and store each unmanaged leaf (each certificate served on a
        TLS port, and each non-CA certificate found in a file) at ``discovered/<sha256>``.

        :raises Conflict: a record kept changing under us (ten lost races).
        """
        items = list(found)
        index = self.known_fingerprints() if known is None else known
        now = self._clock.now()
        errors: Counter[str] = Counter()
        samples: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, ScanError):
                errors[item.reason] += 1
                if len(samples) < 50:
                    samples.append(item.to_json())
        managed: list[tuple[str, str, str]] = []
        retired: list[tuple[str, str, str]] = []
        retired_ids: Collection[str] = (index.retired if isinstance(index, KnownFingerprints)
                                        else set())
        sources: list[tuple[str, str]] = []
        stored: dict[str, Discovery] = {}
        ca = 0
        for c in match_inventory(items, index, expiring_within=self.expiring_within, now=now):
            fp = c.found.sha256_fingerprint.lower()
            if c.managed and c.certificate_id in retired_ids:
                retired.append((fp, c.certificate_id or "", c.found.source))
            elif c.managed:
                managed.append((fp, c.certificate_id or "", c.found.source))
            elif c.found.is_ca and not c.found.served:
                ca += 1
            else:
                stored[fp] = self._merge(c.found, now)
                sources.append((fp, c.found.source))
        return Recorded(tuple(managed), tuple(stored.values()), tuple(sources), ca, errors,
                        tuple(samples), tuple(retired))

    def _merge(self, found: FoundCertificate, now: dt.datetime) -> Discovery:
        path = self._store.paths.discovered(found.sha256_fingerprint)
        return cas.patch(
            lambda: self._read(path), lambda old: merge(old, found, now),
            lambda merged, version: self._store.write_json(path, merged.to_json(),
                                                           cas=version),
            conflict=f"discovery record {found.sha256_fingerprint} keeps changing")

    def _read(self, path: str) -> tuple[Discovery | None, int]:
        doc, version = self._store.read_json(path)
        return (Discovery.from_json(doc) if doc else None), version

    # -- reading ------------------------------------------------------------------------
    def get(self, sha256: str) -> Discovery:
        """:raises NotFound: no such discovery (or not a fingerprint)."""
        doc, _ = self._store.read_json(self._store.paths.discovered(sha256))
        if not doc:
            raise NotFound(f"no discovered certificate {sha256[:64]}")
        return Discovery.from_json(doc)

    def entries(self, *, state: str | None = "unmanaged",
                expiring_within: dt.timedelta | None = None) -> list[Discovery]:
        """Every discovery in ``state`` (None: any), soonest expiry first; with
        ``expiring_within`` only those expiring by then (expired ones included)."""
        now = self._clock.now()
        keys = [k for k in self._store.list(self._store.paths.discovered_dir())
                if not k.endswith("/")]

        def one(key: str) -> Discovery | None:
            try:
                return self.get(key)
            except NotFound:
                return None

        found = [d for d in bounded_map(self._pools.reads, one, keys, self._read_workers)
                 if d is not None]
        out = [d for d in found if (state is None or d.state == state) and (
            expiring_within is None or d.not_after <= now + expiring_within)]
        return sorted(out, key=lambda d: (d.not_after, d.sha256_fingerprint))

    def view(self, discovery: Discovery) -> dict[str, Any]:
        return discovery.view(self._clock.now(), self.expiring_within)

    # -- adoption -----------------------------------------------------------------------
    def mark_adopted(self, sha256: str, certificate_id: str, actor: str) -> Discovery:
        """:raises NotFound: :raises Conflict: already adopted (by a racing request)."""
        path = self._store.paths.discovered(sha256)

        def adopt(current: Discovery | None) -> Discovery:
            if current is None:
                raise NotFound(f"no discovered certificate {sha256[:64]}")
            if current.state == ADOPTED:
                raise Conflict(f"{sha256} was already adopted as "
                               f"{current.adoption.certificate_id if current.adoption else '?'}")
            return dataclasses.replace(current, adoption=Adoption(
                certificate_id, actor, self._clock.now()))

        return cas.patch(
            lambda: self._read(path), adopt,
            lambda adopted, version: self._store.write_json(path, adopted.to_json(),
                                                            cas=version),
            conflict=f"discovery record {sha256} keeps changing")

    # -- endpoint scans -----------------------------------------------------------------
    def start_scan(self, endpoints: Sequence[Endpoint], *, targets: Sequence[str],
                   timeout: float, parallelism: int, sni: str | None,
                   actor: str) -> tuple[str, cf.Future[dict[str, Any]]]:
        """Queue a scan; returns its id (for ``scan``) and a future of its document."""
        scan_id = uuid.uuid4().hex
        doc = {"id": scan_id, "state": "queued", "requested_by": actor,
               "targets": list(targets), "sni": sni, "timeout": timeout,
               "parallelism": parallelism, "total": len(endpoints), "done": 0,
               "started_at": rfc3339(self._clock.now()), "updated_at": None,
               "finished_at": None, "result": None, "error": None}
        self._write_scan(doc)
        return scan_id, self._scans.submit(self._run_scan, doc, list(endpoints))

    def scan(self, scan_id: str) -> dict[str, Any]:
        """The scan's document. A scan whose worker went away (its process died) stops
        making progress; it is answered as ``abandoned`` once silent for long enough.

        :raises NotFound:"""
        doc, _ = self._store.read_json(self._store.paths.discovery_scan(scan_id))
        if not doc:
            raise NotFound(f"no scan {scan_id[:64]}")
        if doc["state"] in ("queued", "running"):
            stamp = parse_rfc3339(doc.get("updated_at") or doc["started_at"])
            # Each endpoint takes at most a few timeouts (connect, handshake reads).
            silent_for = dt.timedelta(seconds=max(120.0, 10 * float(doc["timeout"])))
            if doc["state"] == "running" and self._clock.now() - stamp > silent_for:
                doc = {**doc, "state": "abandoned"}
        return doc

    def _write_scan(self, doc: dict[str, Any]) -> None:
        self._store.write_json(self._store.paths.discovery_scan(doc["id"]), doc, cas=None)

    def _run_scan(self, doc: dict[str, Any], endpoints: list[Endpoint]) -> dict[str, Any]:
        lock = threading.Lock()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            with lock:
                if time.monotonic() - last[0] < PROGRESS_EVERY and done < total:
                    return
                last[0] = time.monotonic()
                doc.update(done=done, updated_at=rfc3339(self._clock.now()))
                try:
                    self._write_scan(doc)
                except CertlockerError as exc:  # progress is best effort
                    log.warning("discovery.progress_unwritten",
                                extra={"scan": doc["id"], "error": type(exc).__name__})

        try:
            doc.update(state="running", updated_at=rfc3339(self._clock.now()))
            self._write_scan(doc)
            results = scan_endpoints(endpoints, self._pools.handshakes,
                                     timeout=doc["timeout"],
                                     parallelism=doc["parallelism"], sni=doc["sni"],
                                     progress=progress,
                                     policy=self._policy() if self._policy else None)
            recorded = self.record(results)
        except Exception as exc:  # noqa: BLE001 - a background job reports, never raises
            detail = (exc.detail if isinstance(exc, CertlockerError)
                      else "internal error (see the service log)")[:500]
            log.error("discovery.scan_failed", extra={"scan": doc["id"],
                                                      "error": type(exc).__name__})
            with lock:
                doc.update(state="failed", error=detail,
                           finished_at=rfc3339(self._clock.now()))
                try:
                    self._write_scan(doc)
                except CertlockerError:
                    pass
            audited(self._audit, doc["requested_by"], "discovery.scan", f"scan:{doc['id']}",
                    "failure", reason=detail)
            return doc
        now = self._clock.now()
        result = recorded.to_json(now, self.expiring_within)
        with lock:
            doc.update(state="done", done=len(endpoints), result=result,
                       updated_at=rfc3339(now), finished_at=rfc3339(now))
            self._write_scan(doc)
        audited(self._audit, doc["requested_by"], "discovery.scan", f"scan:{doc['id']}",
                "success", details={"targets": doc["targets"][:20],
                                    "endpoints": len(endpoints), **result["counts"]})
        log.info("discovery.scan_finished", extra={"scan": doc["id"], **result["counts"]})
        return doc

    def shutdown(self) -> None:
        self._scans.shutdown(wait=False, cancel_futures=True)


def _brief(d: Discovery, now: dt.datetime, expiring_within: dt.timedelta) -> dict[str, Any]:
    return {"sha256_fingerprint": d.sha256_fingerprint, "subject": d.subject,
            "dns_names": list(d.dns_names), "not_after": rfc3339(d.not_after),
            "expiring_soon": d.not_after - now <= expiring_within,
            "expired": d.not_after <= now}
