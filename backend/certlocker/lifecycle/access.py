"""Authorization by Vault: may this caller's token do ``needs`` on a path?

certlocker never keeps its own access lists. It asks Vault (``sys/capabilities-self``
with the caller's token) about the path the action concerns, so ``policies/`` stays the
single source of truth; a refusal is recorded in the audit trail.
"""

from __future__ import annotations

from typing import Collection

from ..audit.recorder import Auditor, audited
from ..errors import AccessDenied
from ..ports import CallerStore as CallerStore

UPDATE = ("update", "create")
READ = ("read",)


def require(caller: CallerStore, api_path: str, needs: Collection[str], *,
            auditor: Auditor, actor: str, action: str, subject: str, what: str) -> None:
    """:raises AccessDenied: naming the capability and path, when Vault says no."""
    if caller.capabilities(api_path) & (set(needs) | {"root"}):
        return
    wanted = " or ".join(needs)
    audited(auditor, actor, action, subject, "denied", reason=f"no {wanted} on {api_path}")
    raise AccessDenied(f"your Vault token may not {what} (needs {wanted} on {api_path})")
