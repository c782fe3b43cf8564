"""``certlocker reconcile``: the reconciler process, wired from settings.

Runs beside (never inside) the gunicorn workers, with certlocker's own Vault token,
which it keeps alive (``token_keeper``) as each API worker does.
SIGTERM and SIGINT stop it cleanly: no new certificate is started, the ones in flight
finish (their ACME orders are journalled in Vault, so a hard kill only delays them).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from . import logs
from . import settings as settings_mod
from .composition import build_reconciler
from .errors import CertlockerError, VaultUnavailable
from .lifecycle.reconciler import Options, Reconciler
from .vault.token_keeper import TokenKeeper

log = logging.getLogger(__name__)

EXIT_OK, EXIT_CONFIG, EXIT_UNAVAILABLE = 0, 2, 3


def main(*, once: bool, interval: float | None, jitter: float,
         sweep_interval: float | None, duration: float | None) -> int:
    try:
        settings = settings_mod.load()
    except CertlockerError as exc:
        print(f"error: {exc.detail}")
        return EXIT_CONFIG
    logs.configure(settings.log_format, settings.log_level)
    interval = interval or float(settings.reconcile_interval_seconds)
    options = Options(interval=interval, jitter=jitter,
                      sweep_interval=sweep_interval or settings.reconcile_sweep_seconds,
                      sweep_budget=float(settings.reconcile_sweep_budget_per_minute),
                      workers=settings.issuance_workers)
    stopping = threading.Event()
    current: list[tuple[Reconciler, TokenKeeper]] = []

    def stop(signum: int, _frame: Any) -> None:
        log.info("reconcile.stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()
        for r, _ in current:
            r.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = 1.0
    while not current:
        try:
            current.append(build_reconciler(settings, options))
        except VaultUnavailable as exc:
            log.error("reconcile.vault_unavailable", extra={"error": exc.detail,
                                                             "retry_in": delay})
            if once or stopping.wait(delay):
                return EXIT_UNAVAILABLE if once else EXIT_OK
            delay = min(delay * 2, 60.0)
    reconciler, keeper = current[0]
    if stopping.is_set():
        reconciler.stop()
    log.info("reconcile.started", extra={"once": once, "interval": interval})
    if once:
        keeper.keep()
    else:
        keeper.start(stopping)
    try:
        if once:
            report = reconciler.run_once()
            log.info("reconcile.once", extra={"outcomes": report.outcomes,
                                              "alerts": report.alerts})
        else:
            reconciler.run(None if duration is None else time.monotonic() + duration)
    except VaultUnavailable as exc:
        log.error("reconcile.vault_unavailable", extra={"error": exc.detail})
        return EXIT_UNAVAILABLE
    finally:
        reconciler.close()
    log.info("reconcile.stopped")
    return EXIT_OK
