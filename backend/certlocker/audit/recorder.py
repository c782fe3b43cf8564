"""Recording audit events from the domain without depending on how they are stored."""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Auditor(Protocol):
    def record(self, actor: str, action: str, subject: str, outcome: str,
               reason: str | None = None, details: dict[str, Any] | None = None) -> Any: ...


class NoAudit:
    def record(self, *args: Any, **kwargs: Any) -> None:
        return None


def audited(auditor: Auditor, actor: str, action: str, subject: str, outcome: str,
            reason: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Record an audit event; a failure to record is logged, never raised, because the
    action it describes has already happened."""
    try:
        auditor.record(actor, action, subject, outcome, reason=reason, details=details)
    except Exception as exc:  # noqa: BLE001 - the audit trail must not break the action
        log.error("audit.record_failed", extra={"action": action, "subject": subject,
                                                "error": type(exc).__name__})
