"""What the lifecycle tells observers (metrics) about its work, without knowing them:
the contract is ``certlocker.ports.IssuanceObserver``; ``NoObserver`` listens to nothing."""

from __future__ import annotations

from ..models import CertificateRef
from ..ports import IssuanceObserver as IssuanceObserver


class NoObserver:
    def issuance_finished(self, ref: CertificateRef, seconds: float, ok: bool) -> None:
        return None
