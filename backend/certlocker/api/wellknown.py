"""Unauthenticated endpoints: ACME http-01 answers, JWKS, health."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..errors import NotFound, Unauthenticated
from .context import services

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/acme-challenge/<token>")
def acme_challenge(token: str) -> Response:
    """RFC 8555 section 8.3: the key authorization as text/plain, from this process's
    memory when its issuance published it, else from Vault, so any replica answers for
    an order another replica placed."""
    answer = services().challenges.get(token)
    if answer is None:
        raise NotFound("no such challenge")
    return Response(answer, mimetype="text/plain")


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    resp = jsonify(services().keyring.jwks())
    resp.headers["Cache-Control"] = "public, max-age=60"
    return resp


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when Vault serves and still accepts certlocker's own token: with the token
    lapsed or revoked, every worker is up but can do nothing."""
    store = services().store
    status = "ready" if store.health() else "vault-unavailable"
    if status == "ready":
        try:
            store.token_life()
        except Unauthenticated:
            status = "vault-token-invalid"
    resp = jsonify({"status": status})
    resp.status_code = 200 if status == "ready" else 503
    return resp
