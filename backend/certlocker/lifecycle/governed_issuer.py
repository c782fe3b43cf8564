"""An issuer kept inside its rate limits, spread over its ACME accounts, with a fallback.

``GovernedIssuer`` stands where the configured issuer stood (``issuers[name]``), so the
lifecycle, the ACME server and revocation use it unchanged:

1. It reserves the certificate's slot in Vault (``records.rate_books``): the earliest
   moment, on the account whose next slot is earliest, that keeps every limit of the
   issuer. A slot within ``max_wait`` is waited for in the worker; a later one is not a
   failure: ``IssuanceDeferred`` schedules the certificate for it (its status says
   ``waiting`` with the time, and the due-index hint is filed at it).
2. It orders from that account. A CA's ``rateLimited`` carries its Retry-After, which
   the retry honours (``Setbacks``: never earlier).
3. When the primary cannot issue in time (a connection failure or ``serverInternal``,
   ``rateLimited`` with a Retry-After beyond the certificate's slack, or its own limits
   exhausted past that slack) and a ``fallback`` is configured, the fallback issues the
   certificate. The stored certificate names the issuer that issued it, the one it
   stood in for and why (``CertificateInfo.fallback_for``/``fallback_reason``).

Returning to the primary: a certificate issued by the fallback is *not* an issuer
change (``planning.decide`` takes ``fallback_for`` as the spec's issuer), so it is not
reissued at once; its next normal renewal goes to the primary again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import threading
import time
from typing import Callable, Mapping, Sequence

from ..clock import Clock
from ..errors import IssuanceDeferred, IssuanceFailed, RevocationFailed
from ..models import IssuedCertificate, IssueRequest, RenewalWindow
from ..ports import Issuer, Journal, RenewalInfoSource, Revoker
from .policy import ratelimits
from .records.rate_books import RateBooks, Reservation

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Governance:
    """What governs one issuer (from its settings)."""

    max_wait: dt.timedelta = dt.timedelta(seconds=30)
    fallback_after: dt.timedelta = dt.timedelta(hours=1)


class GovernedIssuer:
    """``Issuer`` (and ``Revoker``, ``RenewalInfoSource``) over the accounts of one CA."""

    def __init__(self, name: str, accounts: Sequence[Issuer], books: RateBooks, *,
                 clock: Clock, governance: Governance = Governance(),
                 fallback: Issuer | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not accounts:
            raise ValueError("an issuer needs at least one account")
        self.name = name
        self._accounts = list(accounts)
        self._books = books
        self._clock = clock
        self._governance = governance
        self._fallback = fallback
        self._sleep = sleep
        self._lock = threading.Lock()
        self._durations: list[float] = []  # seconds of this process's recent issuances
        self._turns = itertools.count()  # accounts in turn when no order limit picks one

    def with_fallback(self, fallback: Issuer) -> "GovernedIssuer":
        """This issuer (same accounts and reservations) with ``fallback`` behind it."""
        return GovernedIssuer(self.name, self._accounts, self._books, clock=self._clock,
                              governance=self._governance, fallback=fallback,
                              sleep=self._sleep)

    # -- Issuer --------------------------------------------------------------------------
    def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
        """:raises IssuanceDeferred: when the certificate is scheduled for a later slot
        (and no fallback takes it); :raises IssuanceFailed: as the CA's issuers do."""
        now = self._clock.now()
        allowed = ratelimits.slack(request.not_after, now, self._governance.fallback_after)
        slot: Reservation | None = None
        if self._books.limited:
            slot = self._books.reserve(request.ref.id, request.dns_names, self._clock.now,
                                       self._governance.max_wait)
            wait = slot.at - self._clock.now()
            if not slot.taken:
                reason = ratelimits.fallback_for_wait(wait, allowed)
                if reason is not None and self._fallback is not None:
                    return self._from_fallback(request, journal, reason)
                log.info("issuance.deferred", extra={
                    "certificate": request.ref.id, "issuer": self.name,
                    "until": slot.at.isoformat()})
                raise IssuanceDeferred(
                    f"waiting for a slot in issuer {self.name}'s rate limits",
                    until=slot.at, issuer=self.name)
            if wait > dt.timedelta(0):
                self._sleep(wait.total_seconds())
        account = self._accounts[slot.account if slot and self._books.orders_limit
                                 else self._round_robin()]
        started = time.monotonic()
        try:
            issued = account.issue(request, journal)
        except IssuanceDeferred:
            raise
        except IssuanceFailed as exc:
            reason = ratelimits.fallback_for_failure(exc, allowed)
            if reason is None or self._fallback is None:
                raise
            log.warning("issuance.fallback", extra={
                "certificate": request.ref.id, "issuer": self.name, "reason": reason})
            return self._from_fallback(request, journal, reason)
        self._took(time.monotonic() - started)
        return issued

    def _from_fallback(self, request: IssueRequest, journal: Journal,
                       reason: str) -> IssuedCertificate:
        assert self._fallback is not None
        issued = self._fallback.issue(request, journal)
        return dataclasses.replace(issued, info=dataclasses.replace(
            issued.info, issuer_name=self._fallback.name, fallback_for=self.name,
            fallback_reason=reason))

    def _round_robin(self) -> int:
        with self._lock:
            return next(self._turns) % len(self._accounts)

    def _took(self, seconds: float) -> None:
        with self._lock:
            self._durations = (self._durations + [seconds])[-20:]

    # -- what a mass replacement asks --------------------------------------------------
    def eta(self, n: int, now: dt.datetime | None = None) -> dt.datetime:
        """When ``n`` more certificates would be issued by this issuer, given every
        reservation in Vault: the last one's slot plus the median time one issuance has
        taken in this process (0 before any). Per-domain limits are not counted here
        (the names are not known); the order limit per account is."""
        now = now or self._clock.now()
        limit = self._books.orders_limit
        with self._lock:
            recent = sorted(self._durations)
        per = dt.timedelta(seconds=recent[len(recent) // 2]) if recent else dt.timedelta(0)
        return ratelimits.eta(self._books.times(now), limit, n, now, per)

    # -- the optional abilities of the accounts ----------------------------------------
    def revoke(self, certificate_pem: str, reason: int) -> None:
        """Revoke with whichever account (or the fallback) ordered the certificate: a CA
        lets only that account revoke without the certificate's key.

        :raises RevocationFailed: when none can."""
        last: RevocationFailed | None = None
        for issuer in [*self._accounts, *([self._fallback] if self._fallback else [])]:
            if not isinstance(issuer, Revoker):
                continue
            try:
                issuer.revoke(certificate_pem, reason)
                return
            except RevocationFailed as exc:
                last = exc
        raise last or RevocationFailed(f"issuer {self.name} cannot revoke")

    def renewal_info(self, certificate_pem: str) -> RenewalWindow | None:
        first = self._accounts[0]
        if isinstance(first, RenewalInfoSource):
            return first.renewal_info(certificate_pem)
        return None


def eta(issuers: Mapping[str, Issuer], name: str, n: int,
        now: dt.datetime) -> dt.datetime:
    """When ``n`` certificates given to issuer ``name`` now will have been issued, as far
    as its rate limits decide (``GovernedIssuer.eta``): ``now`` for an issuer with no
    limits (certlocker knows nothing that would hold them back).

    :raises KeyError: when no issuer has that name.
    """
    issuer = issuers[name]
    if isinstance(issuer, GovernedIssuer):
        return issuer.eta(n, now)
    return now
