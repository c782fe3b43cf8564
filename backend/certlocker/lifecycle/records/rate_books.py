"""Rate-limit reservations in Vault: the one place every worker and replica agrees on
how many orders an issuer has placed and will place.

One document per limit and key (``paths.rate_book``): the orders of one ACME account,
or the certificates of one registered domain. Each holds the reservations still inside
its window: ``{"at": <epoch seconds>, "for": <certificate id>, "used": bool}``. A
reservation is added with check-and-set on the version read, so two replicas never
take the same slot; a lost race reads again. A certificate scheduled for a later slot
keeps its reservation (``used`` false) and takes it when it comes back.

Taking a slot is checked against the orders actually placed (``used``), at the slot or,
for a certificate back late (its worker was busy, its wake-up came late, its process
died), now: the CA counts orders, not plans, so nothing sent late ever bunches up with
the next window's beyond the limit. When the orders placed leave no room (they came late
for their own slots), the certificate's next chance is when they leave the window,
ahead of the slots planned after its own; whoever is then displaced goes the same way.
Every window is thus filled to the limit by whoever comes, and the pace (the ETA) holds
however late single certificates are. A slot not taken within ``HOLD_GRACE`` of its time
no longer holds new plans back: without that, every certificate late for its slot would
queue behind all the later ones, late in their turn, and under a limit below the load
nothing would be ordered at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from typing import Any, Callable, Sequence

from ... import names
from ...errors import Conflict
from ...ports import Store
from ..policy import ratelimits
from ..policy.ratelimits import Limit

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 50
#: a reserved slot not taken this long after its time no longer holds others back
HOLD_GRACE = dt.timedelta(minutes=2)


@dataclasses.dataclass(frozen=True)
class Reservation:
    """A slot at ``at`` on account ``account``: ``taken`` (the caller orders at it) or
    held for the certificate until it comes back."""

    account: int
    at: dt.datetime
    taken: bool


@dataclasses.dataclass
class _Book:
    path: str
    limit: Limit
    entries: list[dict[str, Any]]
    version: int

    def times(self, without: str | None = None, *, now: dt.datetime | None = None,
              used_only: bool = False) -> list[dt.datetime]:
        """The orders placed and the slots held (not ``without``'s own hold; with
        ``now``, no hold ``HOLD_GRACE`` past; ``used_only``: the orders alone)."""
        stale = (now - HOLD_GRACE).timestamp() if now is not None else None
        return sorted(_time(e["at"]) for e in self.entries if e.get("used") or (
            not used_only and e.get("for") != without
            and (stale is None or e["at"] >= stale)))

    def held_by(self, certificate: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e.get("for") == certificate
                     and not e.get("used")), None)


class RateBooks:
    """Reservations for one issuer's limits: orders per account (``accounts`` books),
    certificates per registered domain."""

    def __init__(self, store: Store, issuer: str, *, accounts: int = 1,
                 orders: Limit | None = None, per_domain: Limit | None = None) -> None:
        self._store = store
        self._issuer = issuer
        self._accounts = accounts
        self._orders = orders
        self._per_domain = per_domain

    @property
    def orders_limit(self) -> Limit | None:
        return self._orders

    @property
    def limited(self) -> bool:
        return self._orders is not None or self._per_domain is not None

    def reserve(self, certificate: str, dns_names: Sequence[str],
                now: Callable[[], dt.datetime], max_wait: dt.timedelta) -> Reservation:
        """The certificate's slot: the one it already holds, else the earliest free one
        on any account that fits every limit. A slot at most ``max_wait`` away is marked
        used (the caller orders at it); a later one is held for the certificate. ``now``
        is asked again at each attempt: an order recorded at the time a lost race began,
        not when it was won, would let the next window's orders come too soon.

        :raises VaultUnavailable: and the store's other errors.
        """
        for _ in range(CAS_ATTEMPTS):
            at = now()
            try:
                return self._reserve_once(certificate, dns_names, at, at + max_wait)
            except Conflict:
                continue  # another worker or replica wrote first: read again
        raise Conflict(f"rate-limit reservations of issuer {self._issuer} are contended")

    def _reserve_once(self, certificate: str, dns_names: Sequence[str], now: dt.datetime,
                      take_until: dt.datetime) -> Reservation:
        accounts = [self._read(self._store.paths.rate_book(
            self._issuer, "orders", f"account-{i}"), self._orders, now)
            for i in range(self._accounts)] if self._orders else []
        domains = ([self._read(self._store.paths.rate_book(self._issuer, "domains", _key(d)),
                               self._per_domain, now)
                    for d in sorted({names.registered_domain(n) for n in dns_names})]
                   if self._per_domain else [])
        held = [(i, book.held_by(certificate)) for i, book in enumerate(accounts)]
        mine = [(i, e) for i, e in held if e is not None]
        if mine:
            index, entry = mine[0]
            at = _time(entry["at"])
            if at > take_until:
                return Reservation(index, at, taken=False)  # still to wait for
            when = max(at, now)
            placed = [(b.times(used_only=True), b.limit) for b in [*domains, accounts[index]]]
            if ratelimits.earliest_all(placed, when) == when:
                self._mark_used(accounts[index], certificate, domains, when)
                return Reservation(index, when, taken=True)
            # Orders placed late for their own slots took its room: its next chance is
            # when they leave the window, ahead of the slots planned after its own.
            return self._hold(certificate, accounts, domains, index,
                              ratelimits.earliest_all(placed, now), take_until)
        best: tuple[dt.datetime, int] | None = None
        for index in range(max(1, len(accounts))):
            pairs = [(b.times(without=certificate, now=now), b.limit) for b in domains]
            if accounts:
                pairs.append((accounts[index].times(without=certificate, now=now),
                              accounts[index].limit))
            at = ratelimits.earliest_all(pairs, now)
            if best is None or at < best[0]:
                best = (at, index)
        assert best is not None
        return self._hold(certificate, accounts, domains, best[1], best[0], take_until)

    def _hold(self, certificate: str, accounts: list[_Book], domains: list[_Book],
              index: int, at: dt.datetime, take_until: dt.datetime) -> Reservation:
        """Write the certificate's slot at ``at`` (taken at once when at most
        ``take_until``: the caller orders at it), replacing a hold it had."""
        taken = at <= take_until
        entry = {"at": at.timestamp(), "for": certificate, "used": taken}
        # Domains first, then the account: a write lost to a race is retried from a fresh
        # read; an entry left behind by that retry only makes the books stricter.
        for book in domains + ([accounts[index]] if accounts else []):
            book.entries = [e for e in book.entries if e.get("for") != certificate
                            or e.get("used")] + [entry]
            self._write(book)
        return Reservation(index, at, taken)

    def _mark_used(self, book: _Book, certificate: str, domains: list[_Book],
                   at: dt.datetime) -> None:
        """The certificate's holds become its order, placed at ``at``."""
        for each in domains + [book]:
            entry = each.held_by(certificate)
            if entry is not None:
                entry.update(at=at.timestamp(), used=True)
                self._write(each)

    def times(self, now: dt.datetime) -> list[list[dt.datetime]]:
        """Every account's reservations still inside the order window (for an ETA)."""
        if self._orders is None:
            return [[] for _ in range(self._accounts)]
        return [self._read(self._store.paths.rate_book(self._issuer, "orders",
                                                       f"account-{i}"),
                           self._orders, now).times(now=now) for i in range(self._accounts)]

    def _read(self, path: str, limit: Limit | None, now: dt.datetime) -> _Book:
        assert limit is not None
        doc, version = self._store.read_json(path)
        horizon = (now - limit.window).timestamp()
        entries = [e for e in (doc or {}).get("entries", [])
                   if isinstance(e, dict) and isinstance(e.get("at"), (int, float))
                   and e["at"] > horizon]
        return _Book(path, limit, entries, version)

    def _write(self, book: _Book) -> None:
        book.version = self._store.write_json(book.path, {"entries": book.entries},
                                              cas=book.version)


def _key(domain: str) -> str:
    """A path component for a registered domain (dots and case are not allowed there)."""
    return "d-" + hashlib.sha256(domain.encode()).hexdigest()[:32]


def _time(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(epoch), dt.timezone.utc)
