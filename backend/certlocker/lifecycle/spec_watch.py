"""The spec watch: specs written straight into Vault (``bao kv put ... specs/...``) are
found within a minute, not at the next hourly sweep.

Only API declarations file a due-index hint; a spec written with the Vault CLI leaves
nothing but its own KV entry. Vault and OpenBao offer no query for "what changed since
T", so the watch asks for every spec's version and write time in one request (OpenBao's
``SCAN detailed-metadata/specs/``) and keeps those written since the last look. The
server still reads every spec's metadata for that answer: its cost grows with the
inventory (about 0.56 s of OpenBao CPU per 10k specs, docs/performance.md), so the watch
never takes more than ``max_share`` of the wall clock: past roughly 50k specs its
interval stretches beyond ``interval`` rather than Vault's load growing.

HashiCorp Vault cannot scan: the watch then lists level by level (specs/, each
environment, each service) every ``fallback_interval`` and reports specs it has not
seen before. A spec changed in place is not visible that way; the hourly sweep finds it.
A token whose policy lacks ``scan`` falls back the same way, and tries scanning again
after ``rescan_after``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Callable

from ..errors import AccessDenied, CertlockerError, OwnTokenRefused
from ..models import CertificateRef
from ..names import component
from ..ports import SpecSource

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SpecChange:
    """A spec new or rewritten since the last look. ``version`` and ``updated`` are
    None when the server could only list (HashiCorp Vault): then it is a new spec."""

    ref: CertificateRef
    version: int | None = None
    updated: dt.datetime | None = None

    @property
    def rewritten(self) -> bool:
        return self.version is not None and self.version > 1


@dataclasses.dataclass(frozen=True)
class WatchOptions:
    interval: float = 20.0  # seconds between looks (OpenBao)
    fallback_interval: float = 300.0  # seconds between level-by-level listings (Vault)
    max_share: float = 0.1  # of the wall clock the watch may spend waiting on Vault
    overlap: dt.timedelta = dt.timedelta(minutes=2)  # writes seen late (HA, clocks)
    rescan_after: float = 3600.0  # a refused scan is tried again after this


class SpecWatch:
    """Call ``poll`` when ``due``; it answers the specs new or changed since the last
    poll (or since ``started``, the reconciler's start, on the first one: what was
    written before is the start-up sweep's)."""

    def __init__(self, source: SpecSource, started: dt.datetime,
                 options: WatchOptions = WatchOptions(),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self.options = options
        self._monotonic = monotonic
        self._high = started  # newest write time seen (Vault's clock)
        self._reported: dict[str, tuple[int, dt.datetime]] = {}  # inside the overlap
        self._listed: set[str] | None = None  # fallback: every spec key seen
        self._scan_refused_at: float | None = None
        self._scans = True  # False once the server said it cannot scan
        # The first look waits one interval: at start-up the sweep is reading everything
        # anyway, and a 100k scan would delay the first tick's due renewals by seconds.
        self._next = monotonic() + options.interval

    @property
    def scanning(self) -> bool:
        return self._scans and self._scan_refused_at is None

    def due(self) -> bool:
        return self._monotonic() >= self._next

    def seconds_until_due(self) -> float:
        return max(0.0, self._next - self._monotonic())

    def postpone(self, seconds: float) -> None:
        """Vault is away: look again no sooner than this."""
        self._next = max(self._next, self._monotonic() + seconds)

    def look_back(self, since: dt.datetime) -> None:
        """Also report, on the next look, the specs written since ``since`` (the last
        time any reconciler was known to run): with a rolling sweep, a reconciler's start
        no longer reads the whole inventory, so what was written while none ran is found
        here. Scanning only: the level-by-level fallback reports new keys it has not
        listed before, and its first listing is a baseline."""
        self._high = min(self._high, since)

    def poll(self) -> list[SpecChange]:
        """The specs written since the last poll.

        :raises VaultUnavailable: Vault cannot be reached; the next poll asks again.
        """
        started = self._monotonic()
        if self._scan_refused_at is not None and (
                started - self._scan_refused_at >= self.options.rescan_after):
            self._scan_refused_at = None
        changes: list[SpecChange] | None = None
        if self.scanning:
            changes = self._scan()
        if changes is None:
            changes = self._list()
            interval = self.options.fallback_interval
        else:
            interval = self.options.interval
        elapsed = self._monotonic() - started
        self._next = started + max(interval, elapsed / self.options.max_share)
        return changes

    # -- OpenBao: one SCAN -----------------------------------------------------------
    def _scan(self) -> list[SpecChange] | None:
        try:
            versions = self._source.spec_versions()
        except (AccessDenied, OwnTokenRefused) as exc:
            self._scan_refused_at = self._monotonic()
            log.warning("spec_watch.scan_refused", extra={
                "detail": exc.detail, "fallback": "listing",
                "needs": f"scan on {self._source.paths.detailed_metadata_path('specs/*')}"})
            return None
        if versions is None:
            self._scans = False
            log.info("spec_watch.scan_unsupported", extra={"fallback": "listing"})
            return None
        cutoff = self._high - self.options.overlap
        changes = []
        for key, (version, updated) in versions.items():
            if updated <= cutoff or self._reported.get(key) == (version, updated):
                continue
            ref = _ref(key)
            if ref is None:
                continue
            self._reported[key] = (version, updated)
            changes.append(SpecChange(ref, version, updated))
        if versions:
            self._high = max(self._high, max(u for _, u in versions.values()))
        cutoff = self._high - self.options.overlap
        self._reported = {k: v for k, v in self._reported.items() if v[1] > cutoff}
        return changes

    # -- HashiCorp Vault: level by level -------------------------------------------------
    def _list(self) -> list[SpecChange]:
        paths = self._source.paths
        keys: set[str] = set()
        for env in self._source.list(paths.specs_dir()):
            if not env.endswith("/"):
                continue
            for svc in self._source.list(paths.specs_dir() + env):
                if not svc.endswith("/"):
                    continue
                for name in self._source.list(paths.specs_dir() + env + svc):
                    if not name.endswith("/") and not name.startswith("_"):
                        keys.add(env + svc + name)
        previous, self._listed = self._listed, keys
        if previous is None:
            return []  # what exists now is the start-up sweep's
        return [SpecChange(ref) for ref in (_ref(k) for k in sorted(keys - previous))
                if ref is not None]


def _ref(key: str) -> CertificateRef | None:
    """``<env>/<service>/<name>`` as a reference; None for anything else (a deeper key
    or a name no certificate can have), which the watch leaves alone."""
    parts = key.split("/")
    if len(parts) != 3 or parts[2].startswith("_"):
        return None
    try:
        return CertificateRef(*(component(field, part) for field, part in
                                zip(("environment", "service", "name"), parts, strict=True)))
    except CertlockerError:
        return None
