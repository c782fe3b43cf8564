"""The target allow-list in force: the settings' ``[targets]``, extended by the
administrator's Vault document.

Settings need a restart to change; the document (``specs/_system/target-policy`` on the
KV mount, written by an administrator, read by certlocker, beyond a team operator's
``specs/+/team-*``) lets an administrator permit a new network, port or domain at
once. It can only add to the settings, never narrow them. It is re-read at most every
``refresh`` seconds per process, so a change applies everywhere within that time. A
document that does not parse is ignored (the settings alone apply, the narrower list)
and logged, never half-applied.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..delivery.target_policy import Refusal, TargetPolicy, check_target
from ..errors import TargetForbidden
from ..models import Target
from .ports import Store

log = logging.getLogger(__name__)


class AllowList:
    """A callable answering the ``TargetPolicy`` in force now (thread-safe)."""

    def __init__(self, base: TargetPolicy, store: Store | None, *, refresh: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._base = base
        self._store = store
        self._refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[float, TargetPolicy] | None = None
        if not (base.networks and base.ports):
            log.warning("targets.allow_list_empty", extra={
                "detail": "the settings allow no target or scan endpoint; only the "
                          "administrator's Vault document can"})

    def __call__(self) -> TargetPolicy:
        if self._store is None:
            return self._base
        with self._lock:
            now = self._monotonic()
            if self._cached is not None and now - self._cached[0] < self._refresh:
                return self._cached[1]
            policy = self._read()
            self._cached = (now, policy)
            return policy

    def _read(self) -> TargetPolicy:
        assert self._store is not None
        path = self._store.paths.target_policy()
        doc, version = self._store.read_json(path)
        if not doc:
            return self._base
        try:
            extra = TargetPolicy.from_document(doc)
        except (ValueError, TypeError) as exc:
            log.warning("targets.document_invalid", extra={
                "path": path, "version": version, "error": str(exc)[:300]})
            return self._base
        return self._base.extended(extra)


def require_allowed(policy: TargetPolicy, targets: tuple[Target, ...] | list[Target],
                    field: str = "targets") -> None:
    """Refuse a declaration naming any target outside ``policy``.

    :raises TargetForbidden: naming the first such target, its index and the rule.
    """
    for index, target in enumerate(targets):
        refusal: Refusal | None = check_target(policy, target)
        if refusal is not None:
            log.info("targets.refused", extra={"target": refusal.endpoint[:200],
                                               "rule": refusal.rule})
            raise TargetForbidden(f"{field}/{index}", refusal.endpoint, refusal.rule,
                                  refusal.reason)
