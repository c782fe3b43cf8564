"""The maintenance windows of services and teams in force: the administrator's Vault
document (``specs/_system/maintenance-windows``, ``maintenance.parse_defaults``), re-read
at most every ``refresh`` seconds per process, so a change applies everywhere within
that time without a restart and an idle fleet costs one read per interval, not one per
certificate. A document that does not parse is not applied (no service window holds a
renewal back: the safer failure) and is logged, never half-applied. A Vault error keeps
the windows last read.

The store applies it where every spec is read (``VaultStore.read_spec``), so the
reconciler, the API's issuance and every view decide with the same window.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

from .. import maintenance
from ..errors import CertlockerError, InvalidInput
from ..models import CertificateSpec
from .ports import Store

log = logging.getLogger(__name__)


class WindowDefaults:
    """``apply(spec)``: the spec with its service's or team's window (thread-safe)."""

    def __init__(self, store: Store, *, refresh: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._refresh = refresh
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: tuple[float, maintenance.Defaults] | None = None

    def current(self) -> maintenance.Defaults:
        with self._lock:
            now = self._monotonic()
            if self._cached is not None and now - self._cached[0] < self._refresh:
                return self._cached[1]
            defaults = self._read(self._cached[1] if self._cached else maintenance.NO_DEFAULTS)
            self._cached = (now, defaults)
            return defaults

    def apply(self, spec: CertificateSpec) -> CertificateSpec:
        """``spec`` with ``inherited_window`` set when it has none of its own and its
        service or team has one."""
        if spec.maintenance_window is not None or spec.problem is not None:
            return spec
        window = self.current().for_service(spec.ref.environment, spec.ref.service)
        return spec if window is None else dataclasses.replace(spec, inherited_window=window)

    def _read(self, last: maintenance.Defaults) -> maintenance.Defaults:
        path = self._store.paths.maintenance_windows()
        try:
            doc, version = self._store.read_json(path)
        except CertlockerError as exc:
            log.warning("maintenance.windows_unreadable", extra={
                "path": path, "error": type(exc).__name__})
            return last
        try:
            return maintenance.parse_defaults(doc)
        except InvalidInput as exc:
            log.warning("maintenance.windows_invalid", extra={
                "path": path, "version": version, "error": exc.detail[:300]})
            return maintenance.NO_DEFAULTS
