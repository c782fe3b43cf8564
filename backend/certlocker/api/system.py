"""/v1/system: deployment-wide administration (JWT signing-key rotation)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..lifecycle import access
from ..audit.recorder import audited
from ..clock import rfc3339
from .context import authenticate_first, require, services

bp = Blueprint("system", __name__, url_prefix="/v1/system")
authenticate_first(bp)

SUBJECT = "system:jwt-signing-keys"


@bp.post("/signing-keys/rotate")
def rotate_signing_key() -> Response:
    """Make a new active signing key; the previous one stays published until every token
    it signed has expired, so no service credential breaks.

    The caller's Vault token must hold update on ``paths.signing_key_grant()`` (the
    admin operator policy does, through ``specs/*``): Vault's policies decide.
    Every gunicorn worker and replica signs with the new key from its next mint (the
    key ring re-reads the document when its Vault version changes).
    """
    s = services()
    who = require(s.store.paths.signing_key_grant(), access.UPDATE,
                  action="signing-key.rotate", subject=SUBJECT, what="rotate the signing key")
    previous = s.keyring.active
    key = s.keyring.rotate()
    published = [k.kid for k in s.keyring.published()]
    audited(s.audit, who.display_name, "signing-key.rotate", SUBJECT, "success",
            details={"kid": key.kid, "previous_kid": previous.kid})
    resp = jsonify({"kid": key.kid, "alg": key.alg, "created_at": rfc3339(key.created_at),
                    "previous_kid": previous.kid, "published": published})
    resp.status_code = 201
    return resp
