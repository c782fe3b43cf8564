"""What the lifecycle tells observers (metrics) about its work, without knowing them."""

from __future__ import annotations

from typing import Protocol

from ..models import CertificateRef


class IssuanceObserver(Protocol):
    def issuance_finished(self, ref: CertificateRef, seconds: float, ok: bool) -> None:
        """One issuance attempt under the lease ended; ``ok`` is False when it failed
        (the failure is in the status's ``last_error``) or raised."""
        ...


class NoObserver:
    def issuance_finished(self, ref: CertificateRef, seconds: float, ok: bool) -> None:
        return None
