"""Name ownership enforced: grants and held names read from Vault, checked on every path.

``check`` runs when a spec is declared (the API, with the operator's token only to learn
whether the operator may grant) and again under the lease before every order (with
certlocker's token), so a spec written straight into Vault cannot carry names its
service was not granted. The rules are pure (``certlocker.ownership``); this module only
reads and writes the records: ``grants/<env>/<service>`` (administrators) and
``system/names/<name>`` (certlocker: which service holds a name).
"""

from __future__ import annotations

import logging
from typing import Iterable

from .. import cas
from ..audit.recorder import Auditor, NoAudit, audited
from ..clock import Clock, SystemClock, rfc3339
from ..errors import AccessDenied, Conflict, GrantCorrupt, InvalidInput, NamesRefused
from ..models import CertificateRef, CertificateSpec
from ..ownership import (NO_GRANT, NOT_GRANTED, Grant, Refusal, claim_key, parse_grant,
                         refusals, summary)
from ..ports import OperatorStore, Store

log = logging.getLogger(__name__)

GRANT_WRITE = ("update", "create")
# Concurrent administrator declarations for one service each add their names with
# check-and-set: every round one of them wins, so this covers that many at once.
ADD_ATTEMPTS = 32


class NameOwnership:
    def __init__(self, store: Store, *, audit: Auditor | None = None,
                 clock: Clock | None = None) -> None:
        self._store = store
        self._audit = audit or NoAudit()
        self._clock = clock or SystemClock()

    # -- reading --------------------------------------------------------------------------
    def grant(self, environment: str, service: str, reader: Store | None = None,
              ) -> tuple[Grant, int]:
        """The service's grant and its KV version (0: none), read with ``reader``
        (default: certlocker's token).

        :raises GrantCorrupt: the record does not parse (naming the field)."""
        store = reader or self._store
        doc, version = store.read_json(store.paths.grant(environment, service))
        try:
            return parse_grant(doc), version
        except InvalidInput as exc:
            raise GrantCorrupt(f"grants/{environment}/{service}: {exc.detail}") from None

    def holders(self, dns_names: Iterable[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name in dns_names:
            doc, _ = self._store.read_json(self._store.paths.name_claim(claim_key(name)))
            out[name] = doc.get("service") if doc else None
        return out

    def refused(self, spec: CertificateSpec) -> tuple[Refusal, ...]:
        """The spec's names its service may not carry (empty: all granted).

        A grant that does not parse grants nothing: every name is refused with its reason.
        """
        return self._check(spec)[0]

    def enforce(self, spec: CertificateSpec) -> tuple[Refusal, ...]:
        """``refused``, and when nothing is, the spec's service claims the names nobody
        holds yet: what runs before every order."""
        refused, holders = self._check(spec)
        if not refused:
            self.claim(spec, holders)
        return refused

    def _check(self, spec: CertificateSpec,
               ) -> tuple[tuple[Refusal, ...], dict[str, str | None]]:
        ref = spec.ref
        try:
            grant, _ = self.grant(ref.environment, ref.service)
        except GrantCorrupt as exc:
            return tuple(Refusal(n, NOT_GRANTED, exc.detail) for n in spec.dns_names), {}
        holders = self.holders(spec.dns_names)
        return refusals(spec.dns_names, ref.service, grant, holders), holders

    # -- enforcing -----------------------------------------------------------------------
    def admit(self, caller: OperatorStore, spec: CertificateSpec,
              actor: str) -> tuple[str, ...]:
        """Check a declaration; return the names the caller's declaration grants.

        Names not granted are granted when the caller may write the service's grant (an
        administrator's declaration grants its names): those are returned, for
        ``add_names`` once the spec is written. Names held by another service stay
        refused unless shared.

        :raises NamesRefused: naming each refused name (audited as denied).
        """
        refused = self.refused(spec)
        missing = tuple(r.name for r in refused if r.reason == NOT_GRANTED)
        if missing and self._may_grant(caller, spec.ref):
            refused = tuple(r for r in refused if r.reason != NOT_GRANTED)
        else:
            missing = ()
        if refused:
            detail = summary(refused)
            audited(self._audit, actor, "spec.create", spec.ref.id, "denied",
                    reason=detail[:500])
            raise NamesRefused(detail, [r.to_json() for r in refused])
        return missing

    def claim(self, spec: CertificateSpec,
              holders: dict[str, str | None] | None = None) -> None:
        """Record the spec's service as the holder of each name nobody holds yet
        (``holders``: as just read). A race lost to another service is caught by the
        check before that service's order."""
        now = rfc3339(self._clock.now())
        known = self.holders(spec.dns_names) if holders is None else holders
        for name in spec.dns_names:
            if known.get(name) is not None:
                continue
            path = self._store.paths.name_claim(claim_key(name))
            try:
                self._store.write_json(path, {"service": spec.ref.service,
                                              "certificate": spec.ref.id, "since": now}, cas=0)
            except Conflict:
                pass  # claimed meanwhile; whoever holds it is checked before each order

    def release(self, ref: CertificateRef, dns_names: Iterable[str],
                still_used: Iterable[str] = ()) -> None:
        """Let go of names this certificate's service holds, except ``still_used`` (names
        on its other certificates), when the certificate is retired."""
        keep = set(still_used)
        for name in dns_names:
            if name in keep:
                continue
            path = self._store.paths.name_claim(claim_key(name))
            doc, _ = self._store.read_json(path)
            if doc is not None and doc.get("service") == ref.service:
                self._store.destroy(path)

    def add_names(self, caller: Store, environment: str, service: str,
                  dns_names: Iterable[str], *, actor: str, subject: str | None = None,
                  ) -> Grant:
        """Add exact names to a service's grant with the caller's token (check-and-set).

        :raises AccessDenied: Vault refuses the caller."""
        path = caller.paths.grant(environment, service)
        seen: list[Grant] = []  # the grant the last change was applied to

        def read() -> tuple[Grant | None, int]:
            try:
                return self.grant(environment, service, reader=caller)
            except GrantCorrupt:
                return NO_GRANT, caller.read_json(path)[1]

        def add(old: Grant | None) -> Grant:
            grant = old or NO_GRANT
            seen[:] = [grant]
            updated = grant.with_names(dns_names)
            if updated == grant:
                raise cas.Unchanged(grant)  # a concurrent declaration granted them already
            return updated

        def write(updated: Grant, version: int) -> None:
            caller.write(path, updated.to_record(), cas=version)

        updated = cas.patch(read, add, write, attempts=ADD_ATTEMPTS,
                            conflict=f"the grant of {environment}/{service} keeps changing")
        grant = seen[-1]
        if updated is not grant:
            audited(self._audit, actor, "grant.update", subject or f"{environment}.{service}",
                    "success", details={"grants": f"{environment}/{service}",
                                        "added": sorted(set(updated.dns_names)
                                                        - set(grant.dns_names))})
        return updated

    def put(self, caller: Store, environment: str, service: str, grant: Grant, *,
            actor: str) -> Grant:
        """Replace a service's grant with the caller's token (Vault decides who may).

        :raises AccessDenied:"""
        path = caller.paths.grant(environment, service)
        try:
            caller.write(path, grant.to_record(), cas=None)
        except AccessDenied:
            audited(self._audit, actor, "grant.update", f"{environment}.{service}", "denied")
            raise
        audited(self._audit, actor, "grant.update", f"{environment}.{service}", "success",
                details={"grants": f"{environment}/{service}", **grant.to_record()})
        return grant

    def _may_grant(self, caller: OperatorStore, ref: CertificateRef) -> bool:
        api_path = caller.paths.api_path(caller.paths.grant(ref.environment, ref.service))
        return bool(caller.capabilities(api_path) & (set(GRANT_WRITE) | {"root"}))

