"""Keeping certlocker's own Vault token alive.

``bootstrap`` gives certlocker a periodic token (24 h): it lives for as long as it is
renewed within each period, and certlocker stops working the moment it lapses. Every
certlocker process (each API worker, the reconciler) runs a :class:`TokenKeeper` in a
thread of its own, which renews the token once less than half of its lifetime is left
(as Vault Agent does for the tokens it holds; one process's renewal leaves the others
nothing to do), and warns
while the token cannot be kept: not renewable, or a renewal that no longer gives the
full lifetime back (an explicit max TTL is near).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from typing import Callable, Protocol

from ..errors import CertlockerError

log = logging.getLogger(__name__)

CHECK_AT_MOST_EVERY = 3600.0  # also notices a token renewed or replaced from outside
CHECK_AT_LEAST_EVERY = 1.0
RETRY_AFTER_FAILURE = 30.0


@dataclasses.dataclass(frozen=True)
class TokenLife:
    ttl: int  # seconds left; 0 for a token that never expires (root)
    full: int  # the lifetime a renewal gives back: the period, else the creation TTL
    renewable: bool

    def expires_at(self, now: dt.datetime) -> float:
        """Unix time of the end, unless renewed; 0.0 for a token that never expires."""
        return now.timestamp() + self.ttl if self.ttl else 0.0


class TokenStore(Protocol):
    def token_life(self) -> TokenLife: ...

    def renew_self(self, increment: int) -> TokenLife: ...


class TokenKeeper:
    def __init__(self, store: TokenStore,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._monotonic = monotonic
        self._next_check = 0.0

    def keep(self) -> float:
        """Renew the token if it is due (a Vault call only when a check is due); returns
        the seconds until the next check. A failure is logged and retried soon, never
        raised: the reconciler's own calls report an unreachable Vault."""
        now = self._monotonic()
        if now < self._next_check:
            return self._next_check - now
        try:
            life = self._store.token_life()
            if life.ttl and life.renewable and life.ttl <= life.full / 2:
                before, life = life, self._store.renew_self(life.full)
                log.info("vault.token_renewed", extra={"ttl": life.ttl,
                                                       "ttl_before": before.ttl})
            wait = self._after(life)
        except CertlockerError as exc:
            log.warning("vault.token_renew_failed", extra={"error": exc.detail,
                                                           "retry_in": RETRY_AFTER_FAILURE})
            wait = RETRY_AFTER_FAILURE
        self._next_check = now + wait
        return wait

    @staticmethod
    def _after(life: TokenLife) -> float:
        if life.ttl == 0:
            return CHECK_AT_MOST_EVERY
        if not life.renewable or life.ttl <= life.full / 2:
            log.warning("vault.token_expiring", extra={
                "ttl": life.ttl, "renewable": life.renewable,
                "action": "give certlocker a new token (certlocker bootstrap vault)"})
            return min(max(life.ttl / 4, CHECK_AT_LEAST_EVERY), CHECK_AT_MOST_EVERY)
        return min(max(life.ttl - life.full / 2, CHECK_AT_LEAST_EVERY), CHECK_AT_MOST_EVERY)

    def start(self, stop: threading.Event | None = None) -> threading.Thread:
        """``run`` in a daemon thread of its own (until ``stop``, else the process's end)."""
        thread = threading.Thread(target=self.run, args=(stop or threading.Event(),),
                                  name="token-keeper", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """``keep`` on its own schedule until ``stop`` is set: a tick that runs for
        minutes (a long sweep, a slow ACME server) never delays a renewal."""
        while not stop.is_set():
            try:
                wait = self.keep()
            except Exception as exc:  # noqa: BLE001 - the keeper must outlive a surprise
                log.error("vault.token_keeper_failed", extra={"error": type(exc).__name__})
                wait = RETRY_AFTER_FAILURE
            stop.wait(wait)
