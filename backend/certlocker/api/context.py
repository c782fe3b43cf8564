"""Reaching the application's services from a request, and the caller's identity."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Collection

from flask import Blueprint, current_app, g, request

from ..lifecycle import access
from ..errors import Unauthenticated

if TYPE_CHECKING:
    from ..composition import Services
    from ..vault.store import VaultStore


def services() -> "Services":
    found: Services = current_app.extensions["certlocker"]
    return found


def caller_token() -> str:
    """The operator's Vault token: ``X-Vault-Token`` (as the Vault API) or ``Bearer``.

    :raises Unauthenticated: when none is given.
    """
    token = request.headers.get("X-Vault-Token", "").strip()
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
    if not token or len(token) > 4096 or not token.isprintable():
        raise Unauthenticated("send your Vault token in X-Vault-Token")
    return token


@dataclasses.dataclass(frozen=True)
class Caller:
    store: "VaultStore"
    display_name: str


class _Identities:
    """Who a token is, remembered briefly, so a request costs one Vault call fewer.

    Safe because it only names the caller: every request still acts with the token
    itself, so Vault refuses a token revoked in the meantime on its very next call.
    Keyed by a hash of the token, never the token.
    """

    TTL = 30.0
    MAX = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def name(self, token: str, lookup: Callable[[], dict[str, object]]) -> str:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(key)
            if hit and hit[0] > now:
                return hit[1]
        info = lookup()
        name = str(info.get("display_name") or info.get("entity_id") or "token")
        with self._lock:
            self._seen[key] = (now + self.TTL, name)
            self._seen.move_to_end(key)
            while len(self._seen) > self.MAX:
                self._seen.popitem(last=False)
        return name


_identities = _Identities()


def caller() -> Caller:
    """A store acting with the caller's token, once Vault has confirmed the token is
    valid (so a bad token is a 401, not a 403 on the first path it touches). Made once
    per request."""
    found: Caller | None = g.get("certlocker_caller")
    if found is None:
        token = caller_token()
        store = services().store.for_token(token)
        found = Caller(store, _identities.name(token, store.lookup_self))
        g.certlocker_caller = found
    return found


def authenticate_first(bp: Blueprint, *, exempt: Collection[str] = ()) -> None:
    """Every view of ``bp`` (but the ``exempt`` endpoints, which take another
    credential) answers 401 to a missing or invalid Vault token before it reads its
    body or query: an unauthenticated client learns nothing from validation messages
    (the configured environments, issuers, field names)."""

    @bp.before_request
    def _authenticate() -> None:
        if request.endpoint not in exempt:
            caller()


def require(api_path: str, needs: tuple[str, ...], *, action: str, subject: str,
            what: str) -> Caller:
    """The caller, once Vault confirms their token holds one of ``needs`` on
    ``api_path``. :raises AccessDenied: (recorded in the audit trail)."""
    who = caller()
    access.require(who.store, api_path, needs, auditor=services().audit,
                   actor=who.display_name, action=action, subject=subject, what=what)
    return who
