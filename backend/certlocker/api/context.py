"""Reaching the application's services from a request, and the caller's identity."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from flask import current_app, request

from .. import access
from ..errors import Unauthenticated

if TYPE_CHECKING:
    from ..app import Services
    from ..vault.store import VaultStore


def services() -> "Services":
    return current_app.extensions["certlocker"]


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


def caller() -> Caller:
    """A store acting with the caller's token, after Vault confirms the token is valid
    (so a bad token is a 401, not a 403 on the first path it touches)."""
    store = services().store.for_token(caller_token())
    info = store.lookup_self()
    return Caller(store, info.get("display_name") or info.get("entity_id") or "token")


def require(api_path: str, needs: tuple[str, ...], *, action: str, subject: str,
            what: str) -> Caller:
    """The caller, once Vault confirms their token holds one of ``needs`` on
    ``api_path``. :raises AccessDenied: (recorded in the audit trail)."""
    who = caller()
    access.require(who.store, api_path, needs, auditor=services().audit,
                   actor=who.display_name, action=action, subject=subject, what=what)
    return who
