"""The lifecycle layer's own contracts: what its parts (the reconciler, revocation,
retirement, verification) need of one another, so each is written against a shape
rather than a class, and a unit test can hand it a small fake.

What the lifecycle needs from outside (storage, issuers, probes, credentials,
notifiers) is in the domain's ``certlocker.ports``; ``Store`` is also reachable here for
the modules that import it from this layer.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

from ..models import CertificateRef, CertificateSpec, CertificateStatus
from ..ports import Issuer
from ..ports import Store as Store

Decision = Callable[[CertificateSpec, CertificateStatus | None], bool]
StatusChange = Callable[[CertificateStatus | None], CertificateStatus]


@runtime_checkable
class CertificateIssuing(Protocol):
    """What the reconciler needs of ``lifecycle.service.CertificateService``: issue, and
    keep the status."""

    def issue(self, ref: CertificateRef, decide: Decision | None = None,
              ) -> CertificateStatus:
        """Issue under the certificate's lease when ``decide`` (asked again under the
        lease, on a fresh read) says so; the resulting status. Safe to call from several
        replicas at once: only the lease holder works, the others get the current status.

        :raises NotFound: the spec is gone.
        """
        ...

    def update_status(self, ref: CertificateRef, change: StatusChange) -> CertificateStatus:
        """Read, ``change`` and write the status with check-and-set, retried on a race.

        :raises Conflict: the status kept changing under us.
        """
        ...

    def refs(self, caller: Store, environment: str | None = None,
             service: str | None = None) -> Iterable[CertificateRef]:
        """Every declared certificate ``caller`` may list, lazily, in path order."""
        ...

    def finish_journals(self) -> None:
        """Resume (or clear) every issuance a crash left in flight. Idempotent."""
        ...

    def mark_invalid(self, spec: CertificateSpec) -> CertificateStatus:
        """Record that the stored spec does not parse (``spec.problem``, once per
        reason), keeping the certificate it had; nothing is ordered until it is fixed."""
        ...


@runtime_checkable
class RenewalInfoRefresher(Protocol):
    """Optional for a ``CertificateIssuing``: it asks the CA's renewal window again when
    its Retry-After is over (``CertificateService`` does). Asked with ``isinstance``."""

    def refresh_renewal_info(self, spec: CertificateSpec, status: CertificateStatus | None,
                             ) -> CertificateStatus | None:
        """The new status with a fresh window, or ``status`` unchanged.

        :raises Conflict: the status kept changing under us.
        """
        ...


@runtime_checkable
class ReplacementIssuing(Protocol):
    """What revocation needs of ``CertificateService``: the configured issuers (to find
    the one that revokes) and an issuance that replaces a revoked certificate."""

    @property
    def issuers(self) -> Mapping[str, Issuer]:
        """The configured issuers by name."""
        ...

    def issue(self, ref: CertificateRef) -> CertificateStatus:
        """Issue now, under the lease, whatever the renewal plan says."""
        ...


@runtime_checkable
class Verifying(Protocol):
    """What the reconciler needs of ``lifecycle.verification.Verifier``."""

    def verify_certificate(self, ref: CertificateRef, actor: str | None = None, *,
                           only_when_delivered: bool = False) -> Any:
        """Probe every target of ``ref`` and record what each node serves (with
        ``only_when_delivered``, only once every node serves the current certificate).

        :raises NotFound: no spec for ``ref``.
        :raises Conflict: nothing issued yet, or the certificate keeps changing.
        """
        ...


@runtime_checkable
class FollowingUp(Protocol):
    """What the reconciler needs of ``lifecycle.revocation.RevocationService``."""

    def follow_up(self, ref: CertificateRef) -> CertificateStatus:
        """Advance a stored revocation from wherever it stopped; resumable, idempotent
        once final.

        :raises NotFound: no revocation is recorded for ``ref``.
        """
        ...


@runtime_checkable
class FollowingUpAll(Protocol):
    """What the reconciler needs of ``lifecycle.retirement.RetirementService``."""

    def follow_up_all(self) -> int:
        """Advance every unfinished retirement; how many were looked at. One that fails
        is logged and left for the next call: raises only when storage is unreachable."""
        ...


@runtime_checkable
class AdvancingAll(Protocol):
    """What the reconciler needs of ``lifecycle.replacements.ReplacementService``."""

    def advance_all(self) -> int:
        """Move every running replacement operation on; how many were running. One that
        fails is logged and left for the next call."""
        ...
