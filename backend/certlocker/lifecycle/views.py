"""Operator-facing reads of certificates: one view, several at once, listings.

Each read goes through the *caller's* store (their Vault token decides what they see);
only the expiry index is read with certlocker's own token, and callers re-read each
certificate it names with theirs.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
from typing import Any, Callable, Iterable, Protocol

from ..errors import AccessDenied, NotFound, OwnTokenRefused
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State
from .records.expiry_index import ExpiryIndex
from .ports import Store

class RetiredLookup(Protocol):
    """``lifecycle.retirement.RetiredRecords``: the spec a retired certificate had."""

    def lookup(self, ref: CertificateRef, status: CertificateStatus
               ) -> tuple[CertificateSpec, dict[str, Any] | None] | None: ...


@dataclasses.dataclass(frozen=True)
class CertificateView:
    """A spec with its status: what the API and CLI show. A retired certificate's spec
    is the one it had; ``retirement`` is its retirement record's view."""

    spec: CertificateSpec
    status: CertificateStatus
    retirement: dict[str, Any] | None = None


class CertificateReads:
    """``view``, ``views``, ``refs`` and ``expiring_refs`` of ``CertificateService``."""

    def __init__(self, expiry: ExpiryIndex, retired: RetiredLookup | None,
                 readers: cf.Executor) -> None:
        self._expiry = expiry
        self._retired = retired
        self._readers = readers

    def view(self, caller: Store, ref: CertificateRef) -> CertificateView:
        """A retired certificate, whose spec is gone, is shown with the spec it had
        (the caller's read of its status decides whether they may see it).

        :raises NotFound: :raises AccessDenied:"""
        found = caller.read_spec(ref)
        status = caller.read_status(ref) if found is not None or self._retired else None
        if status is not None and status[0].state is State.RETIRED and self._retired:
            retired = self._retired.lookup(ref, status[0])
            if retired is not None:
                return CertificateView(found[0] if found else retired[0], status[0],
                                       retirement=retired[1])
        if found is None:
            raise NotFound(f"no certificate {ref.id}")
        spec = found[0]
        current = status[0] if status else CertificateStatus(state=State.PENDING)
        if spec.problem is not None:  # shown at once, before the reconciler records it
            current = current.replace(state=State.INVALID, last_error=spec.problem)
        return CertificateView(spec, current)

    def views(self, caller: Store, refs: list[CertificateRef]) -> list[CertificateView | None]:
        """Read several views at once with the caller's token; None where the caller may
        not read one or it is gone."""
        def one(ref: CertificateRef) -> CertificateView | None:
            try:
                return self.view(caller, ref)
            except OwnTokenRefused:
                raise  # not the caller's doing: the whole answer would be wrong
            except (NotFound, AccessDenied):
                return None
        return list(self._readers.map(one, refs))

    def expiring_refs(self, cutoff: dt.datetime, environment: str | None = None,
                      service: str | None = None) -> Iterable[CertificateRef]:
        """Certificates whose current certificate expires by ``cutoff`` (from the expiry
        index, read with certlocker's own token: callers re-read each with theirs)."""
        return self._expiry.refs_until(cutoff, environment, service)


def listed(caller: Store, folder: Callable[..., str], environment: str | None = None,
           service: str | None = None) -> Iterable[CertificateRef]:
    """The certificates under ``folder(env, service)`` (``<root>/<env>/<service>/<name>``)."""
    # '_' entries are administrators' documents (specs/_system/...), never certificates.
    envs = [environment] if environment else [
        e.rstrip("/") for e in caller.list(folder()) if not e.startswith("_")]
    for env in envs:
        services = [service] if service else [
            s.rstrip("/") for s in caller.list(folder(env)) if not s.startswith("_")]
        for svc in services:
            for name in caller.list(folder(env, svc)):
                if not name.endswith("/") and not name.startswith("_"):
                    yield CertificateRef(env, svc, name)
