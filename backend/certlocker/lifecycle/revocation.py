"""Revocation: revoke at the CA, then replace or remove every copy, then watch the targets.

The steps talk through the stored ``Revocation`` record (``status.revocation.phase``), so
a crash between two of them leaves a record that ``follow_up`` (or the reconciler) picks
up again:

    replacing | removing  ->  destroying  ->  verifying  ->  done | verify-timeout

``replacing`` issues a new certificate (new key) and then destroys every other KV version
of ``certs/...``: a consumer can read older versions of its own path, and one of them
holds the compromised key. ``removing`` destroys every version. ``verifying`` probes each
target until none serves the revoked certificate, bounded in time.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import enum
import logging
import time
from typing import Any, Callable, Collection, Mapping

from . import access
from .access import CallerStore
from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock
from ..errors import (CertlockerError, Conflict, InvalidInput, NotFound)
from ..models import (CertificateInfo, CertificateRef, CertificateSpec, CertificateStatus,
                      Revocation, State, Target, TargetStatus)
from ..ports import Probe, Revoker, Store, VersionedStore
from .ports import ReplacementIssuing
from .records import status_writes

log = logging.getLogger(__name__)

#: RFC 5280 section 5.3.1 CRLReason names and codes that ACME may carry (RFC 8555 section
#: 7.6). certificateHold (6) is left out: it is meant to be undone, and ACME cannot.
REASONS: Mapping[str, int] = {
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3,
    "superseded": 4, "cessationOfOperation": 5, "privilegeWithdrawn": 9, "aACompromise": 10,
}
_BY_LOWER = {name.lower(): name for name in REASONS}



class Phase(enum.StrEnum):
    """``Revocation.phase``: the step a revocation is at (stored, shown)."""

    REPLACING = "replacing"
    REMOVING = "removing"
    DESTROYING = "destroying"
    VERIFYING = "verifying"
    DONE = "done"
    VERIFY_TIMEOUT = "verify-timeout"


class TargetResult(enum.StrEnum):
    """What probing one target found after a revocation (``Revocation.targets``)."""

    SERVING_REVOKED = "serving-revoked"
    CLEAR = "clear"
    UNREACHABLE = "unreachable"


REPLACING, REMOVING, DESTROYING, VERIFYING = (Phase.REPLACING, Phase.REMOVING,
                                              Phase.DESTROYING, Phase.VERIFYING)
DONE, VERIFY_TIMEOUT = Phase.DONE, Phase.VERIFY_TIMEOUT
FINAL = (DONE, VERIFY_TIMEOUT)
SERVING_REVOKED, CLEAR, UNREACHABLE = (TargetResult.SERVING_REVOKED, TargetResult.CLEAR,
                                       TargetResult.UNREACHABLE)


def parse_reason(value: Any) -> str:
    """The RFC 5280 name (case-insensitive; ``caCompromise`` for ``cACompromise``).

    :raises InvalidInput: for anything else, including ``certificateHold``.
    """
    if not isinstance(value, str) or value.lower() not in _BY_LOWER:
        if isinstance(value, str) and value.lower() == "certificatehold":
            raise InvalidInput("reason", "certificateHold cannot be requested over ACME")
        raise InvalidInput("reason", "must be one of " + ", ".join(REASONS))
    return _BY_LOWER[value.lower()]


def authorize(caller: CallerStore, store: Store, ref: CertificateRef, auditor: Auditor,
              actor: str, action: str, needs: Collection[str]) -> None:
    """Vault decides through the caller's own token: it must hold one of ``needs`` on the
    certificate's spec path.

    :raises AccessDenied: when it does not (and records the denial).
    """
    access.require(caller, store.paths.api_path(store.paths.spec(ref)), needs,
                   auditor=auditor, actor=actor, action=action, subject=ref.id,
                   what=f"{action.split('.')[-1]} {ref.id}")


def update_status(store: Store, ref: CertificateRef,
                  change: Callable[[CertificateStatus | None], CertificateStatus]
                  ) -> CertificateStatus:
    """Read-modify-write of the status with check-and-set, retried on a race.

    :raises Conflict: when it keeps losing the race.
    """
    return status_writes.update_status(store, ref, change)


class RevocationService:
    def __init__(self, store: VersionedStore, certificates: ReplacementIssuing, probe: Probe,
                 *, clock: Clock | None = None, audit: Auditor | None = None,
                 actor: str = "certlocker", replace_timeout: float = 360.0,
                 verify_timeout: float = 300.0, verify_interval: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, pool: cf.Executor) -> None:
        """``pool`` runs the follow-ups in the background (two threads in certlocker);
        it is the service's own: ``shutdown`` stops it."""
        self._store = store
        self._certs = certificates
        self._probe = probe
        self._clock = clock or SystemClock()
        self._audit = audit or NoAudit()
        self._actor = actor
        self._replace_timeout = replace_timeout
        self._verify_timeout = verify_timeout
        self._verify_interval = verify_interval
        self._sleep = sleep
        self._pool = pool

    # -- the operator's action ----------------------------------------------------------
    def revoke(self, caller: CallerStore | None, ref: CertificateRef, reason: str,
               replace: bool | None = None,
               actor: str = "operator") -> cf.Future[CertificateStatus]:
        """Revoke the current certificate at the CA, record it, and start the follow-up
        (replace or remove, destroy old versions, verify targets) in the background.

        ``caller`` is the operator's store (Vault decides); None when certlocker acts
        on an authority it checked itself (its ACME server: an account of the
        certificate's service, or the certificate's own key).

        ``replace`` defaults to True for keyCompromise while a spec still asks for the
        certificate, else False.

        :raises AccessDenied: without update on the spec path (Vault decides).
        :raises NotFound: when nothing is known of the certificate.
        :raises Conflict: when there is no issued, unrevoked certificate to revoke.
        :raises InvalidInput: for a bad reason, or replace without a spec.
        :raises RevocationFailed: when the CA refuses.
        """
        reason = parse_reason(reason)
        if caller is not None:
            authorize(caller, self._store, ref, self._audit, actor, "certificate.revoke",
                      ("update",))
        found_spec = self._store.read_spec(ref)
        found_status = self._store.read_status(ref)
        spec = found_spec[0] if found_spec else None
        status = found_status[0] if found_status else None
        if spec is None and status is None:
            raise NotFound(f"no certificate {ref.id}")
        if status is None or status.current is None or status.state is State.RETIRED:
            raise Conflict(f"{ref.id} has no issued certificate to revoke")
        current = status.current
        if status.revocation is not None and status.revocation.serial == current.serial:
            if status.revocation.phase not in FINAL:
                return self._pool.submit(self.follow_up, ref)
            raise Conflict(f"{ref.id}: certificate {current.serial} is already revoked")
        if replace is None:
            replace = reason == "keyCompromise" and spec is not None
        if replace and spec is None:
            raise InvalidInput("replace", f"{ref.id} has no spec to issue a replacement from")
        revoker = self._revoker(spec, current)
        leaf = current.leaf_pem
        if leaf is None:  # issued before the status record carried the leaf
            document, _ = self._store.read_json(self._store.paths.leaf(ref))
            if document and document.get("serial") == current.serial:
                leaf = document.get("certificate")
        if not isinstance(leaf, str):
            raise Conflict(f"{ref.id}: the PEM of certificate {current.serial} was not "
                           "recorded at issuance; renew it, then revoke the old serial "
                           "at the CA by hand")
        try:
            revoker.revoke(leaf, REASONS[reason])
        except CertlockerError as exc:
            audited(self._audit, actor, "certificate.revoke", ref.id, "failure",
                    reason=exc.detail[:500], details={"serial": current.serial,
                                                      "reason": reason})
            raise
        record = Revocation(serial=current.serial,
                            sha256_fingerprint=current.sha256_fingerprint, reason=reason,
                            revoked_at=self._clock.now(), replace=replace,
                            vault_version=current.vault_version,
                            phase=REPLACING if replace else REMOVING)
        update_status(self._store, ref, lambda old: (old or status).replace(
            state=State.REVOKED, revocation=record, updated_at=self._clock.now()))
        audited(self._audit, actor, "certificate.revoke", ref.id, "success",
                details={"serial": current.serial, "reason": reason, "replace": replace,
                         "sha256_fingerprint": current.sha256_fingerprint})
        log.info("certificate.revoked", extra={"certificate": ref.id,
                                               "serial": current.serial, "reason": reason})
        return self._pool.submit(self.follow_up, ref)

    def _revoker(self, spec: CertificateSpec | None, current: CertificateInfo) -> Revoker:
        name = spec.issuer if spec else current.issuer_name
        issuer = self._certs.issuers.get(name or "")
        if issuer is None or not isinstance(issuer, Revoker):
            raise Conflict(f"issuer {name!r} is not configured or cannot revoke")
        return issuer

    # -- the follow-up (certlocker's own token; resumable) -------------------------------
    def follow_up(self, ref: CertificateRef) -> CertificateStatus:
        """Advance the stored revocation to a final phase, from wherever it stopped.
        Returns the status; a replacement that fails leaves the phase at ``replacing``
        (with ``last_error``) for a later call."""
        while True:
            found = self._store.read_status(ref)
            if found is None or found[0].revocation is None:
                raise NotFound(f"no revocation recorded for {ref.id}")
            status = found[0]
            rev = status.revocation
            assert rev is not None
            if rev.phase in FINAL:
                return status
            steps: dict[str, Callable[[CertificateRef, CertificateStatus, Revocation], bool]]
            steps = {REPLACING: self._replace, REMOVING: self._remove,
                     DESTROYING: self._destroy_old, VERIFYING: self._verify}
            step = steps.get(rev.phase)
            if step is None:
                raise Conflict(f"unknown revocation phase {rev.phase!r}")
            if not step(ref, status, rev):
                return self._store.read_status(ref)[0]  # type: ignore[index]

    def _set_phase(self, ref: CertificateRef, phase: str,
                   targets: tuple[tuple[str, str], ...] | None = None) -> CertificateStatus:
        def change(old: CertificateStatus | None) -> CertificateStatus:
            assert old is not None and old.revocation is not None
            rev = dataclasses.replace(old.revocation, phase=phase, targets=(
                old.revocation.targets if targets is None else targets))
            return old.replace(revocation=rev, updated_at=self._clock.now())
        return update_status(self._store, ref, change)

    def _replace(self, ref: CertificateRef, status: CertificateStatus,
                 rev: Revocation) -> bool:
        deadline = time.monotonic() + self._replace_timeout
        while True:
            before = status.attempts
            result = self._certs.issue(ref)
            if result.current is not None and result.current.serial != rev.serial:
                break
            if result.attempts > before or time.monotonic() > deadline:
                audited(self._audit, self._actor, "certificate.revoke.replace", ref.id,
                        "failure", reason=(result.last_error or "timed out")[:500])
                return False
            self._sleep(1.0)  # another replica holds the issuance lease
            status = self._store.read_status(ref)[0]  # type: ignore[index]
        audited(self._audit, self._actor, "certificate.revoke.replace", ref.id, "success",
                details={"revoked_serial": rev.serial, "serial": result.current.serial})
        self._set_phase(ref, DESTROYING)
        return True

    def _remove(self, ref: CertificateRef, status: CertificateStatus, rev: Revocation) -> bool:
        paths = self._store.paths
        self._store.destroy(paths.cert(ref))
        self._store.destroy(paths.leaf(ref))
        audited(self._audit, self._actor, "certificate.versions.destroy", ref.id, "success",
                details={"versions": "all", "revoked_serial": rev.serial})
        self._set_phase(ref, VERIFYING)
        return True

    def _destroy_old(self, ref: CertificateRef, status: CertificateStatus,
                     rev: Revocation) -> bool:
        path = self._store.paths.cert(ref)
        keep = status.current.vault_version if status.current else None
        doomed = [v for v in self._store.live_versions(path) if v != keep]
        self._store.destroy_versions(path, doomed)
        audited(self._audit, self._actor, "certificate.versions.destroy", ref.id, "success",
                details={"versions": doomed, "kept": keep, "revoked_serial": rev.serial})
        self._set_phase(ref, VERIFYING)
        return True

    def _verify(self, ref: CertificateRef, status: CertificateStatus, rev: Revocation) -> bool:
        found = self._store.read_spec(ref)
        targets: tuple[Target, ...] = found[0].targets if found else ()
        expected = status.current
        deadline = time.monotonic() + self._verify_timeout
        delay = min(0.5, self._verify_interval)
        while targets and expected is not None:
            results = self._probe(expected, (rev.serial,), targets, now=self._clock.now())
            progress = tuple((r.address, _progress(r, rev)) for r in results)
            done = all(state == CLEAR for _, state in progress)
            if done or time.monotonic() + delay > deadline:
                self._set_phase(ref, DONE if done else VERIFY_TIMEOUT, progress)
                break
            self._set_phase(ref, VERIFYING, progress)
            self._sleep(delay)
            delay = min(delay * 2, self._verify_interval)
        else:
            self._set_phase(ref, DONE, ())
        final = self._store.read_status(ref)[0]  # type: ignore[index]
        assert final.revocation is not None
        audited(self._audit, self._actor, "certificate.revoke.verify", ref.id,
                "success" if final.revocation.phase == DONE else "failure",
                details={"targets": dict(final.revocation.targets)})
        return True

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _progress(result: TargetStatus, rev: Revocation) -> str:
    if result.served_sha256 is None:
        return UNREACHABLE
    if _norm(result.served_sha256) == _norm(rev.sha256_fingerprint):
        return SERVING_REVOKED
    return CLEAR


def _norm(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()
