"""Retirement: a lifecycle stage of its own. The certificate stops being managed, is
revoked at the CA (unless the operator says not to), takes the service's credentials
with it when it was the service's last certificate, loses its key material, and stays
listed as ``retired`` with its history; nodes still serving it are reported.

The steps talk through a stored record (``system/retirements/<env>/<service>/<name>``,
kept for good: it holds the spec as it was, so the certificate is still shown), and an
unfinished one is also marked at ``system/retiring/...``, which the reconciler lists on
every sweep and follows up (``follow_up_all``). A crash between two steps resumes there:

    requested -> revoking -> credentials -> destroying -> verifying -> done

``requested``: recorded before the operator's token removes the spec; a record still
``requested`` whose spec is still there never took effect and is dropped. ``verifying``
stays while some node serves the retired certificate (re-checked on every sweep).

Also here: the cleanup report of leftovers (expired material still stored, status
without spec).
"""

from __future__ import annotations

import dataclasses
import enum
import datetime as dt
import logging
import time
import uuid
from typing import Any, Callable, Iterator, Mapping

from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock, parse_rfc3339, rfc3339
from ..errors import AccessDenied, CertlockerError, Conflict, NotFound
from ..models import (CertificateInfo, CertificateRef, CertificateSpec, CertificateStatus,
                      KeyType, State, Target, TargetStatus)
from .name_grants import NameOwnership
from ..ports import Credentials, Issuer, OperatorStore, Probe, Revoker, Store, VersionedStore
from .revocation import REASONS, authorize, update_status
from .records.vault_adapters import StoreLease
from .verification import CLEAR, SERVING_RETIRED

log = logging.getLogger(__name__)

UNMANAGED = "unmanaged"  # a status (and maybe material) whose spec is gone
EXPIRED = "expired"  # the current certificate expired and is still stored
RETIRED_WITH_MATERIAL = "retired-with-material"  # a tombstone whose certs/ path holds data



class Phase(enum.StrEnum):
    """``Retirement.phase``: the step a retirement is at (stored, shown)."""

    REQUESTED = "requested"
    REVOKING = "revoking"
    CREDENTIALS = "credentials"
    DESTROYING = "destroying"
    VERIFYING = "verifying"
    DONE = "done"


REQUESTED, REVOKING, CREDENTIALS = Phase.REQUESTED, Phase.REVOKING, Phase.CREDENTIALS
DESTROYING, VERIFYING, DONE = Phase.DESTROYING, Phase.VERIFYING, Phase.DONE
PHASES = tuple(Phase)
UNREACHABLE = "unreachable"
REASON = "cessationOfOperation"  # RFC 5280: the certificate is no longer needed


@dataclasses.dataclass(frozen=True)
class Leftover:
    ref: CertificateRef
    kind: str
    state: str
    serial: str | None
    not_after: dt.datetime | None
    live_versions: int | None  # None when the caller may not read the certs/ metadata

    def to_json(self) -> dict[str, Any]:
        return {"id": self.ref.id, "kind": self.kind, "state": self.state,
                "serial": self.serial,
                "not_after": rfc3339(self.not_after) if self.not_after else None,
                "live_versions": self.live_versions}


@dataclasses.dataclass(frozen=True)
class Retirement:
    """The stored record of one retirement and how far it got. ``spec`` is the spec as it
    was when retired (the certificate is still shown with it); ``steps`` holds what each
    step did (``revocation``, ``credentials``, ``destroyed_versions``), public facts
    only; ``targets`` maps node address to serving-retired | clear | unreachable."""

    phase: Phase
    requested_by: str
    requested_at: dt.datetime
    revoke: bool
    spec: dict[str, Any] | None
    serial: str | None = None
    sha256_fingerprint: str | None = None
    credentials_generation: int | None = None
    steps: dict[str, Any] = dataclasses.field(default_factory=dict)
    targets: dict[str, str] = dataclasses.field(default_factory=dict)
    last_error: str | None = None
    updated_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "requested_by": self.requested_by,
                "requested_at": rfc3339(self.requested_at), "revoke": self.revoke,
                "reason": REASON if self.revoke else None, "spec": self.spec,
                "serial": self.serial, "sha256_fingerprint": self.sha256_fingerprint,
                "credentials_generation": self.credentials_generation,
                "steps": dict(self.steps), "targets": dict(self.targets),
                "last_error": self.last_error,
                "updated_at": rfc3339(self.updated_at) if self.updated_at else None}

    def view(self) -> dict[str, Any]:
        """What the API shows (the spec is shown as the certificate itself)."""
        data = self.to_json()
        del data["spec"], data["credentials_generation"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Retirement":
        updated = data.get("updated_at")
        phase = data.get("phase")
        return cls(phase=Phase(phase) if phase in PHASES else REVOKING,
                   requested_by=str(data.get("requested_by") or "unknown"),
                   requested_at=parse_rfc3339(data["requested_at"]),
                   revoke=bool(data.get("revoke")),
                   spec=data.get("spec") if isinstance(data.get("spec"), dict) else None,
                   serial=data.get("serial"), sha256_fingerprint=data.get("sha256_fingerprint"),
                   credentials_generation=data.get("credentials_generation"),
                   steps=dict(data.get("steps") or {}), targets=dict(data.get("targets") or {}),
                   last_error=data.get("last_error"),
                   updated_at=parse_rfc3339(updated) if updated else None)

    def replace(self, **changes: Any) -> "Retirement":
        return dataclasses.replace(self, **changes)


class RetiredRecords:
    """Reads retirement records with certlocker's own token, for the views of retired
    certificates (the caller's right to see one is their read of its status)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def read(self, ref: CertificateRef) -> Retirement | None:
        doc, _ = self._store.read_json(self._store.paths.retirement(ref))
        return Retirement.from_json(doc) if doc else None

    def lookup(self, ref: CertificateRef, status: CertificateStatus
               ) -> tuple[CertificateSpec, dict[str, Any] | None] | None:
        """The spec a retired certificate had and its record's view; None when nothing
        is known of its spec (neither a record nor a last certificate)."""
        record = self.read(ref)
        spec = _spec_of(ref, record, status.current)
        if spec is None:
            return None
        return spec, record.view() if record else None

    def refs(self, environment: str | None = None,
             service: str | None = None) -> Iterator[CertificateRef]:
        """Every certificate ever retired (also ones declared again since), in path
        order: the listing adds them to the declared ones."""
        return _refs(self._store, self._store.paths.retirements_dir, environment, service)


class RetirementService:
    def __init__(self, store: VersionedStore, *, holder: str, lease_ttl: float,
                 clock: Clock | None = None, audit: Auditor | None = None,
                 issuers: Mapping[str, Issuer] | None = None,
                 credentials: Credentials | None = None, probe: Probe | None = None,
                 probe_timeout: float = 5.0, actor: str = "certlocker",
                 names: NameOwnership | None = None) -> None:
        self._store = store
        self._names = names
        self._holder = holder
        self._lease_ttl = lease_ttl
        self._clock = clock or SystemClock()
        self._audit = audit or NoAudit()
        self._issuers = issuers if issuers is not None else {}
        self._credentials = credentials
        self._probe = probe
        self._probe_timeout = probe_timeout
        self._actor = actor
        self.records = RetiredRecords(store)

    # -- the operator's action ----------------------------------------------------------
    def retire(self, caller: OperatorStore, ref: CertificateRef, actor: str = "operator",
               revoke: bool = True) -> tuple[CertificateStatus, Retirement | None]:
        """Stop managing the certificate and take it through every retirement step.

        The spec is removed with the caller's token after the record (with the spec as
        it was) is stored; then the status says ``retired`` and the steps run under the
        certificate's lease. A step that fails (the CA unreachable) leaves the record at
        its phase, with ``last_error``, for the reconciler; calling this again resumes
        it, and ``revoke=False`` then skips a revocation the CA keeps refusing.

        :raises AccessDenied: without delete on the spec path (Vault decides).
        :raises NotFound: when nothing is known of the certificate.
        :raises Conflict: while an issuance holds the certificate's lease.
        """
        authorize(caller, self._store, ref, self._audit, actor, "certificate.retire",
                  ("delete",))
        found_spec = self._store.read_spec(ref)
        found_status = self._store.read_status(ref)
        status = found_status[0] if found_status else None
        if found_spec is None and status is None:
            raise NotFound(f"no certificate {ref.id}")
        record = self.records.read(ref)
        if (found_spec is None and status is not None and status.state is State.RETIRED
                and record is None):
            return status, None  # retired by a release before records: nothing to resume
        lease = self._lease(ref)
        if not lease.acquire(time.time(), self._lease_ttl):
            raise Conflict(f"an issuance or retirement of {ref.id} is in flight; "
                           "retry when it ends")
        try:
            if status is not None and status.state is State.RETIRED and record is not None:
                if not revoke and record.revoke and record.phase == REVOKING:
                    record = self._save(ref, record.replace(revoke=False))
                if found_spec is not None:  # a retirement that stopped before this
                    self._destroy_spec(caller, ref, actor)
            else:
                record = self._start(caller, ref, found_spec, status, actor, revoke)
            self._advance(ref)
        finally:
            lease.release()
        found = self._store.read_status(ref)
        assert found is not None
        return found[0], self.records.read(ref)

    def _start(self, caller: OperatorStore, ref: CertificateRef,
               found_spec: tuple[CertificateSpec, int] | None,
               status: CertificateStatus | None, actor: str, revoke: bool) -> Retirement:
        paths = self._store.paths
        current = status.current if status else None
        spec = found_spec[0].to_json() if found_spec else None
        if spec is None:  # a status without spec, or a tombstone of an older release
            known = _spec_of(ref, self.records.read(ref), current)
            spec = known.to_json() if known else None
        generation = (self._credentials.generation(ref.environment, ref.service)
                      if self._credentials is not None else None)
        now = self._clock.now()
        record = Retirement(phase=REQUESTED, requested_by=actor, requested_at=now,
                            revoke=revoke, spec=spec,
                            serial=current.serial if current else None,
                            sha256_fingerprint=current.sha256_fingerprint if current else None,
                            credentials_generation=generation, updated_at=now)
        self._store.write_json(paths.retiring(ref), {"since": rfc3339(now)}, cas=None)
        self._save(ref, record)
        if found_spec is not None:
            try:
                self._destroy_spec(caller, ref, actor)
            except BaseException:
                self._drop(ref)
                raise
        return self._mark_retired(ref, record)

    def _destroy_spec(self, caller: OperatorStore, ref: CertificateRef, actor: str) -> None:
        """Stop managing first: nothing reissues a certificate without a spec."""
        try:
            caller.destroy(self._store.paths.spec(ref))
        except AccessDenied:
            audited(self._audit, actor, "certificate.retire", ref.id, "denied",
                    reason="Vault denied deleting the spec")
            raise

    def _mark_retired(self, ref: CertificateRef, record: Retirement) -> Retirement:
        now = self._clock.now()
        tombstone = update_status(self._store, ref, lambda old: CertificateStatus(
            state=State.RETIRED, current=old.current if old else None,
            history=old.history if old else (), revocation=old.revocation if old else None,
            targets=old.targets if old else (), updated_at=now, retired_at=now))
        record = self._save(ref, record.replace(phase=REVOKING))
        current = tombstone.current
        audited(self._audit, record.requested_by, "certificate.retire", ref.id, "success",
                details={"serial": current.serial if current else None,
                         "sha256_fingerprint": current.sha256_fingerprint if current else None,
                         "revoke": record.revoke})
        log.info("certificate.retired", extra={"certificate": ref.id,
                                               "revoke": record.revoke})
        return record

    # -- the follow-up (certlocker's own token; resumable) -------------------------------
    def follow_up_all(self) -> int:
        """Carry on every unfinished retirement (``system/retiring/...``); the number
        looked at. One that fails is logged and left for the next sweep."""
        count = 0
        for ref in list(_refs(self._store, self._store.paths.retiring_dir)):
            count += 1
            try:
                self.follow_up(ref)
            except CertlockerError as exc:
                log.warning("retirement.unfinished", extra={
                    "certificate": ref.id, "error": type(exc).__name__})
        return count

    def follow_up(self, ref: CertificateRef) -> Retirement | None:
        """Advance the stored retirement from wherever it stopped, under the lease (a
        holder still at work is left alone). Returns the record (None when none)."""
        lease = self._lease(ref)
        if not lease.acquire(time.time(), self._lease_ttl):
            return self.records.read(ref)
        try:
            self._advance(ref)
        finally:
            lease.release()
        return self.records.read(ref)

    def _lease(self, ref: CertificateRef) -> StoreLease:
        """The certificate's lease (the one issuance takes), one holder per call so two
        threads of a process exclude each other too."""
        return StoreLease(self._store, ref, f"{self._holder}:{uuid.uuid4().hex[:8]}")

    def _advance(self, ref: CertificateRef) -> None:
        while True:
            record = self.records.read(ref)
            found = self._store.read_status(ref)
            status = found[0] if found else None
            if record is None:
                self._unmark(ref)
                return
            if status is None or status.state is not State.RETIRED:
                if record.phase == REQUESTED and self._store.read_spec(ref) is None:
                    self._mark_retired(ref, record)  # stopped between spec and status
                    continue
                # Never took effect (the spec is still there), or declared again since.
                if record.phase == REQUESTED:
                    self._drop(ref)
                    audited(self._audit, self._actor, "certificate.retire", ref.id,
                            "failure", reason="interrupted before the spec was removed")
                else:
                    self._unmark(ref)
                return
            if record.phase == DONE:
                self._unmark(ref)
                return
            if record.phase == REQUESTED:  # the spec is gone, the status says so
                self._save(ref, record.replace(phase=REVOKING))
                continue
            step = {REVOKING: self._revoke, CREDENTIALS: self._revoke_credentials,
                    DESTROYING: self._destroy, VERIFYING: self._verify_step}[record.phase]
            if not step(ref, status, record):
                return

    def _revoke(self, ref: CertificateRef, status: CertificateStatus,
                record: Retirement) -> bool:
        current = status.current
        outcome: str
        if not record.revoke:
            outcome = "not requested"
        elif current is None or current.serial != record.serial:
            outcome = "nothing issued"
        elif status.revocation is not None and status.revocation.serial == current.serial:
            outcome = "already revoked"
        else:
            name = (record.spec or {}).get("issuer") or current.issuer_name or ""
            issuer = self._issuers.get(name)
            leaf = current.leaf_pem or self._leaf(ref, current)
            if issuer is None or not isinstance(issuer, Revoker) or not leaf:
                outcome = ("the issuer cannot revoke" if issuer is not None
                           else f"issuer {name!r} is not configured")
                if not leaf and issuer is not None:
                    outcome = "the certificate's PEM was not recorded"
                audited(self._audit, self._actor, "certificate.retire.revoke", ref.id,
                        "failure", reason=outcome, details={"serial": current.serial})
            else:
                try:
                    issuer.revoke(leaf, REASONS[REASON])
                except CertlockerError as exc:
                    self._save(ref, record.replace(last_error=exc.detail[:500]))
                    audited(self._audit, self._actor, "certificate.retire.revoke", ref.id,
                            "failure", reason=exc.detail[:500],
                            details={"serial": current.serial, "reason": REASON})
                    log.warning("retirement.revoke_failed", extra={
                        "certificate": ref.id, "error": exc.detail[:200]})
                    return False
                outcome = "revoked"
                audited(self._audit, self._actor, "certificate.retire.revoke", ref.id,
                        "success", details={"serial": current.serial, "reason": REASON})
        self._save(ref, record.replace(phase=CREDENTIALS, last_error=None,
                                       steps={**record.steps, "revocation": outcome}))
        return True

    def _leaf(self, ref: CertificateRef, current: CertificateInfo) -> str | None:
        document, _ = self._store.read_json(self._store.paths.leaf(ref))
        if document and document.get("serial") == current.serial:
            leaf = document.get("certificate")
            return leaf if isinstance(leaf, str) else None
        return None

    def _revoke_credentials(self, ref: CertificateRef, status: CertificateStatus,
                            record: Retirement) -> bool:
        """Revoke the service's credentials when no certificate of the service is left
        that is not retired. Only the generation seen when the retirement began is
        revoked, so a step repeated after a crash does not revoke twice."""
        others = self._live_siblings(ref)
        if others:
            outcome = f"kept: {len(others)} other certificate(s) of the service"
        elif self._credentials is None:
            outcome = "not configured"
        else:
            now_generation = self._credentials.generation(ref.environment, ref.service)
            if (record.credentials_generation is not None
                    and now_generation != record.credentials_generation):
                outcome = "revoked"  # this step already did (or someone else did)
            else:
                self._credentials.revoke(ref.environment, ref.service, actor=self._actor)
                outcome = "revoked"
        audited(self._audit, self._actor, "certificate.retire.credentials", ref.id,
                "success", details={"service": f"{ref.environment}/{ref.service}",
                                    "credentials": outcome})
        self._save(ref, record.replace(phase=DESTROYING,
                                       steps={**record.steps, "credentials": outcome}))
        return True

    def _live_siblings(self, ref: CertificateRef) -> list[str]:
        """Declared certificates of the same service other than ``ref`` whose status
        is not retired."""
        paths = self._store.paths
        names = [n for n in self._store.list(paths.specs_dir(ref.environment, ref.service))
                 if not n.endswith("/") and not n.startswith("_") and n != ref.name]
        live = []
        for name in names:
            found = self._store.read_status(CertificateRef(ref.environment, ref.service, name))
            if found is None or found[0].state is not State.RETIRED:
                live.append(name)
        return live

    def _sibling_names(self, ref: CertificateRef, name: str) -> tuple[str, ...]:
        found = self._store.read_spec(CertificateRef(ref.environment, ref.service, name))
        return found[0].dns_names if found else ()

    def _destroy(self, ref: CertificateRef, status: CertificateStatus,
                 record: Retirement) -> bool:
        paths = self._store.paths
        destroyed = self._store.live_versions(paths.cert(ref))
        for logical in (paths.cert(ref), paths.inflight(ref), paths.leaf(ref)):
            self._store.destroy(logical)
        audited(self._audit, self._actor, "certificate.versions.destroy", ref.id, "success",
                details={"versions": "all", "destroyed_versions": len(destroyed),
                         "retired_serial": record.serial})
        if self._names is not None:  # names no other certificate of the service carries
            retired = (record.spec or {}).get("dns_names") or []
            still = [n for sibling in self._live_siblings(ref)
                     for n in self._sibling_names(ref, sibling)]
            self._names.release(ref, [n for n in retired if isinstance(n, str)], still)
        self._save(ref, record.replace(phase=VERIFYING, steps={
            **record.steps, "destroyed_versions": len(destroyed)}))
        return True

    def _verify_step(self, ref: CertificateRef, status: CertificateStatus,
                     record: Retirement) -> bool:
        self._verify(ref, status, record, self._actor)
        return False  # verifying ends the pass, done or not

    # -- verification of a retired certificate ------------------------------------------
    def verify(self, ref: CertificateRef, actor: str = "operator") -> CertificateStatus:
        """Probe the targets the retired certificate had; a node serving it (or an
        earlier version of it) is reported ``serving-retired`` in ``status.targets``.

        :raises NotFound: when it is not a retired certificate with a known spec.
        """
        found = self._store.read_status(ref)
        record = self.records.read(ref)
        if found is None or found[0].state is not State.RETIRED or record is None:
            raise NotFound(f"no retired certificate {ref.id}")
        return self._verify(ref, found[0], record, actor)

    def _verify(self, ref: CertificateRef, status: CertificateStatus, record: Retirement,
                actor: str) -> CertificateStatus:
        spec = _spec_of(ref, record, status.current)
        targets: tuple[Target, ...] = spec.targets if spec else ()
        expected = status.current
        results: list[TargetStatus] = []
        if targets and expected is not None and self._probe is not None:
            now = self._clock.now()
            probed = self._probe(expected, status.history, targets, now=now,
                                 timeout=self._probe_timeout)
            retired = {_norm(f) for f in (expected.sha256_fingerprint, *status.history)}
            results = [_as_retired(r, retired, now) for r in probed]
        serving = sorted(r.address for r in results if r.status == SERVING_RETIRED)
        phase = VERIFYING if serving else DONE
        new = update_status(self._store, ref, lambda old: (old or status).replace(
            targets=tuple(results), updated_at=self._clock.now()))
        self._save(ref, record.replace(phase=phase, targets={
            r.address: r.status for r in results}))
        if phase == DONE:
            self._unmark(ref)
        else:  # the reconciler looks again on its next sweep
            self._store.write_json(self._store.paths.retiring(ref),
                                   {"since": rfc3339(record.requested_at)}, cas=None)
        audited(self._audit, actor, "certificate.retire.verify", ref.id,
                "failure" if serving else "success",
                reason=f"{len(serving)} node(s) still serve the retired certificate"
                if serving else None,
                details={"serving_retired": serving[:40], "nodes": len(results)})
        log.info("retirement.verified", extra={"certificate": ref.id,
                                               "serving_retired": len(serving)})
        return new

    # -- records ------------------------------------------------------------------------
    def _save(self, ref: CertificateRef, record: Retirement) -> Retirement:
        record = record.replace(updated_at=self._clock.now())
        self._store.write_json(self._store.paths.retirement(ref), record.to_json(), cas=None)
        return record

    def _unmark(self, ref: CertificateRef) -> None:
        try:
            self._store.destroy(self._store.paths.retiring(ref))
        except NotFound:
            pass

    def _drop(self, ref: CertificateRef) -> None:
        """Forget a retirement that never took effect."""
        for logical in (self._store.paths.retirement(ref), self._store.paths.retiring(ref)):
            try:
                self._store.destroy(logical)
            except NotFound:
                pass

    def leftovers(self, caller: OperatorStore) -> Iterator[Leftover]:
        """Everything the caller may list that should be cleaned up, in path order."""
        now = self._clock.now()
        paths = self._store.paths
        for ref in _status_refs(caller, paths):
            found = caller.read_status(ref)
            if found is None:
                continue
            status = found[0]
            current = status.current
            live = _live_count(caller, paths.cert(ref))
            stored = live is None or live > 0
            kind = None
            if status.state is State.RETIRED:
                kind = RETIRED_WITH_MATERIAL if live else None
            elif caller.read_spec(ref) is None:
                kind = UNMANAGED
            elif current is not None and current.not_after < now and stored:
                kind = EXPIRED
            if kind:
                yield Leftover(ref, kind, status.state.value,
                               current.serial if current else None,
                               current.not_after if current else None, live)


def _status_refs(caller: OperatorStore, paths: Any) -> Iterator[CertificateRef]:
    for env in caller.list(paths.status_dir()):
        env = env.rstrip("/")
        for svc in caller.list(paths.status_dir(env)):
            svc = svc.rstrip("/")
            for name in caller.list(paths.status_dir(env, svc)):
                if not name.endswith("/"):
                    yield CertificateRef(env, svc, name)


def _live_count(caller: OperatorStore, logical: str) -> int | None:
    try:
        return len(caller.live_versions(logical))
    except AccessDenied:
        return None


def _refs(store: Any, folder: Callable[..., str], environment: str | None = None,
          service: str | None = None) -> Iterator[CertificateRef]:
    envs = [environment] if environment else [
        e.rstrip("/") for e in store.list(folder()) if e.endswith("/")]
    for env in envs:
        services = [service] if service else [
            s.rstrip("/") for s in store.list(folder(env)) if s.endswith("/")]
        for svc in services:
            for name in store.list(folder(env, svc)):
                if not name.endswith("/"):
                    yield CertificateRef(env, svc, name)


def _spec_of(ref: CertificateRef, record: Retirement | None,
             current: CertificateInfo | None) -> CertificateSpec | None:
    """The spec a retired certificate had: the record's copy, else what its last
    certificate tells (names and issuer) for tombstones of releases before records."""
    if record is not None and record.spec is not None:
        try:
            return CertificateSpec.from_json(record.spec)
        except (KeyError, TypeError, ValueError):
            log.warning("retirement.spec_unreadable", extra={"certificate": ref.id})
    if current is None:
        return None
    key_type = KeyType.EC_P256
    try:
        key_type = KeyType(current.key_type) if current.key_type else key_type
    except ValueError:
        pass
    return CertificateSpec(ref=ref, dns_names=current.dns_names,
                           issuer=current.issuer_name or current.issuer, key_type=key_type)


def _as_retired(result: TargetStatus, retired: set[str], now: dt.datetime) -> TargetStatus:
    served = result.served_sha256
    if served is None:
        status = UNREACHABLE
    elif _norm(served) in retired:
        status = SERVING_RETIRED
    else:
        status = CLEAR
    return TargetStatus(result.address, status, served, result.checked_at or now,
                        result.detail if status == UNREACHABLE else None)


def _norm(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()
