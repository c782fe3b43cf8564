"""Operators' writes of specs, with their own token: a declaration and a spec PATCH.

Vault's policies decide what the caller may write; name ownership decides which names
their service may ask for. What follows a write (the pending status, the due hint, the
queued issuance) uses certlocker's own store.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any, Callable, Mapping

from .. import specs
from ..audit.recorder import Auditor, audited
from ..clock import Clock
from ..errors import CertlockerError, Conflict, NotFound
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State
from .policy import planning
from .records.due_index import DueIndex, Hint
from ..ports import OperatorStore
from .name_grants import NameOwnership
from .ports import Store
from .records.status_writes import update_status

#: What an operator may add to a spec the ACME server writes, kept across its orders.
KEPT = ("targets", "owner", "contact", "renew_before")

#: ``CertificateService.schedule``: ``(ref, *, declared, first_lease, hint)``.
Schedule = Callable[..., "cf.Future[CertificateStatus]"]


class Declarations:
    """``declare_with_status`` and ``update_spec`` of ``CertificateService``."""

    def __init__(self, store: Store, ownership: NameOwnership, *, audit: Auditor,
                 clock: Clock, due: DueIndex | None, side: cf.Executor,
                 schedule: Schedule) -> None:
        self._store = store
        self._ownership = ownership
        self._audit = audit
        self._clock = clock
        self._due = due
        self._side = side
        self._schedule = schedule

    def declare(self, caller: OperatorStore, spec: CertificateSpec, actor: str,
                ) -> tuple[cf.Future[CertificateStatus], CertificateStatus]:
        """See ``CertificateService.declare_with_status``."""
        granting = self._ownership.admit(caller, spec, actor)
        try:
            caller.create_spec(spec)
        except CertlockerError as exc:
            audited(self._audit, actor, "spec.create", spec.ref.id, "denied"
                    if exc.status in (401, 403) else "failure", reason=exc.detail)
            raise
        if granting:  # an administrator's declaration grants its names, before any order
            self._ownership.add_names(caller, spec.ref.environment, spec.ref.service,
                                      granting, actor=actor, subject=spec.ref.id)
        recorded = self._side.submit(
            audited, self._audit, actor, "spec.create", spec.ref.id, "success",
            details={"dns_names": list(spec.dns_names), "issuer": spec.issuer,
                     "key_type": spec.key_type.value})
        try:
            return self._start(spec)
        finally:
            recorded.result()  # the event is in the trail before the caller hears back

    def _start(self, spec: CertificateSpec,
               ) -> tuple[cf.Future[CertificateStatus], CertificateStatus]:
        """The pending status, the due hint and the queued issuance of a declaration."""
        # Reset before the issuance starts, which may write VALID over it otherwise.
        earlier = self._store.read_status(spec.ref)
        if earlier is None:
            pending = CertificateStatus(state=State.PENDING)
        else:
            pending = update_status(self._store, spec.ref, lambda old: CertificateStatus(
                state=State.PENDING, updated_at=self._clock.now(),
                history=old.history if old else ()), known=earlier)
        hint: Hint | None = None
        if self._due is not None:  # the reconciler takes over if this process dies
            hint = self._due.schedule_quietly(spec, pending, self._clock.now())
        future = self._schedule(spec.ref, declared=True, first_lease=earlier is None,
                                hint=hint)
        return future, pending

    def update_spec(self, caller: OperatorStore, ref: CertificateRef,
                    patch: Mapping[str, Any], rules: specs.SpecRules, actor: str,
                    check: Callable[[CertificateSpec], None] | None,
                    ) -> tuple[CertificateSpec, list[str], cf.Future[CertificateStatus] | None]:
        """See ``CertificateService.update_spec``."""
        path = caller.paths.spec(ref)
        record, version = caller.read_json(path)
        if record is None or not version:
            raise NotFound(f"no certificate {ref.id}")
        spec = specs.patched(record, patch, ref, rules)
        before = specs.from_record(record, ref, rules)
        changed = [f for f in specs.FIELDS if before.problem is not None
                   or spec.to_json().get(f) != before.to_json().get(f)]
        if not changed:
            return spec, [], None
        if check is not None:
            check(spec)
        granting: tuple[str, ...] = ()
        if before.problem is not None or set(spec.dns_names) != set(before.dns_names):
            granting = self._ownership.admit(caller, spec, actor)
        try:
            caller.write(path, spec.to_json(), cas=version)
        except CertlockerError as exc:
            audited(self._audit, actor, "spec.update", ref.id, "denied"
                    if exc.status in (401, 403) else "failure", reason=exc.detail[:500])
            if isinstance(exc, Conflict):
                raise Conflict(f"{ref.id} changed while it was being patched; read it "
                               "again and retry") from None
            raise
        if granting:
            self._ownership.add_names(caller, ref.environment, ref.service, granting,
                                      actor=actor, subject=ref.id)
        audited(self._audit, actor, "spec.update", ref.id, "success",
                details={"changed": changed, "dns_names": list(spec.dns_names),
                         "targets": [t.address for t in spec.targets]})
        return spec, changed, self._act_on_change(spec)

    def record_client_order(self, spec: CertificateSpec, rules: specs.SpecRules,
                            actor: str) -> cf.Future[CertificateStatus]:
        """Write, with certlocker's own token, the spec of a certificate a client orders
        with its CSR (the ACME server's finalize), keeping what operators added to an
        earlier one (targets, owner, contact, renew_before), then queue its issuance.
        Name ownership is checked by the caller and again before the order; the caller
        records the action in the audit trail (the ACME server's ``acme.order.finalize``).

        :raises Conflict: the spec kept changing under us."""
        path = self._store.paths.spec(spec.ref)
        for _ in range(3):
            record, version = self._store.read_json(path)
            merged = {**(record or {}), **{k: v for k, v in spec.to_json().items()
                                            if k not in KEPT or not record}}
            written = specs.from_record(merged, spec.ref, rules)
            if written.problem is not None:  # what an operator added no longer parses
                written = spec
            try:
                self._store.write(path, written.to_json(), cas=version or 0)
            except Conflict:
                continue
            future = self._act_on_change(written)
            return future if future is not None else self._schedule(spec.ref)
        raise Conflict(f"{spec.ref.id} kept changing while its order was recorded")

    def _act_on_change(self, spec: CertificateSpec) -> cf.Future[CertificateStatus] | None:
        """After a spec change: clear backoff and a refusal (the change may be the fix),
        queue an issuance if one is now needed, and file the due hint."""
        now = self._clock.now()
        found = self._store.read_status(spec.ref)
        status = found[0] if found else None
        if status is not None and (status.next_attempt_at is not None
                                   or not status.retryable):
            known = status

            def cleared(old: CertificateStatus | None) -> CertificateStatus:
                return (old or known).replace(next_attempt_at=None, retryable=True,
                                              updated_at=now)

            status = update_status(self._store, spec.ref, cleared)
        if self._due is not None:
            self._due.schedule_quietly(spec, status, now)
        if planning.decide(spec, status, now).needed:
            return self._schedule(spec.ref)
        return None
