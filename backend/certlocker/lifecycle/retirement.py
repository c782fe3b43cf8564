"""Retirement (stop managing a certificate, destroy its key material, keep a tombstone)
and the cleanup report of leftovers (expired material still stored, status without spec).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any, Iterator, Protocol

from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock, rfc3339
from ..errors import AccessDenied, Conflict, NotFound
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State
from .revocation import RevocationStore, authorize, update_status
from .vault_adapters import StoreLease

UNMANAGED = "unmanaged"  # a status (and maybe material) whose spec is gone
EXPIRED = "expired"  # the current certificate expired and is still stored
RETIRED_WITH_MATERIAL = "retired-with-material"  # a tombstone whose certs/ path holds data


class CallerStore(Protocol):
    """The operator's store (their Vault token)."""

    def capabilities(self, api_path: str) -> set[str]: ...

    def destroy(self, logical: str) -> None: ...

    def list(self, logical_dir: str) -> list[str]: ...

    def read_spec(self, ref: CertificateRef) -> tuple[CertificateSpec, int] | None: ...

    def read_status(self, ref: CertificateRef) -> tuple[CertificateStatus, int] | None: ...

    def live_versions(self, logical: str) -> list[int]: ...


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


class RetirementService:
    def __init__(self, store: RevocationStore, *, holder: str, lease_ttl: float,
                 clock: Clock | None = None, audit: Auditor | None = None) -> None:
        self._store = store
        self._holder = holder
        self._lease_ttl = lease_ttl
        self._clock = clock or SystemClock()
        self._audit = audit or NoAudit()

    def retire(self, caller: CallerStore, ref: CertificateRef,
               actor: str = "operator") -> CertificateStatus:
        """Remove the spec (with the caller's token), destroy every KV version of
        ``certs/...`` and the in-flight state, and leave a ``retired`` tombstone in status.
        Idempotent: a half-done retirement (crash) is finished by calling it again.

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
        if found_spec is None and status is not None and status.state is State.RETIRED:
            return status
        lease = StoreLease(self._store, ref, self._holder)
        if not lease.acquire(time.time(), self._lease_ttl):
            raise Conflict(f"an issuance of {ref.id} is in flight; retry when it ends")
        paths = self._store.paths
        try:
            if found_spec is not None:
                caller.destroy(paths.spec(ref))  # stop managing first: nothing reissues it
            destroyed = self._store.live_versions(paths.cert(ref))
            for logical in (paths.cert(ref), paths.inflight(ref), paths.leaf(ref)):
                self._store.destroy(logical)
            now = self._clock.now()
            tombstone = update_status(self._store, ref, lambda old: CertificateStatus(
                state=State.RETIRED, current=old.current if old else None,
                history=old.history if old else (), revocation=old.revocation if old else None,
                updated_at=now, retired_at=now))
        except AccessDenied:
            audited(self._audit, actor, "certificate.retire", ref.id, "denied",
                    reason="Vault denied deleting the spec")
            raise
        finally:
            self._store.destroy(paths.lease(ref))
        current = tombstone.current
        audited(self._audit, actor, "certificate.retire", ref.id, "success", details={
            "serial": current.serial if current else None,
            "sha256_fingerprint": current.sha256_fingerprint if current else None,
            "destroyed_versions": destroyed})
        return tombstone

    def leftovers(self, caller: CallerStore) -> Iterator[Leftover]:
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


def _status_refs(caller: CallerStore, paths: Any) -> Iterator[CertificateRef]:
    for env in caller.list(paths.status_dir()):
        env = env.rstrip("/")
        for svc in caller.list(paths.status_dir(env)):
            svc = svc.rstrip("/")
            for name in caller.list(paths.status_dir(env, svc)):
                if not name.endswith("/"):
                    yield CertificateRef(env, svc, name)


def _live_count(caller: CallerStore, logical: str) -> int | None:
    try:
        return len(caller.live_versions(logical))
    except AccessDenied:
        return None
