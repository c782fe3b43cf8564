"""/v1/services/<env>/<service>/credentials: mint, refresh, revoke service JWTs; and
/v1/services/<env>/<service>/acme-accounts: External Account Bindings for the ACME
server, under the same permission (revoking the credentials stops them too)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from .. import names
from ..lifecycle import access
from ..clock import SystemClock, rfc3339
from ..credentials.tokens import MintedToken
from ..errors import InvalidInput, Unauthenticated
from .context import Caller, authenticate_first, caller, services

bp = Blueprint("credentials", __name__, url_prefix="/v1/services")
# refresh authenticates with the service's own credential, not a Vault token
authenticate_first(bp, exempt=("credentials.refresh",))


def _names(env: str, service: str) -> tuple[str, str]:
    """The two path components, checked for syntax only (which reveals nothing about
    this deployment)."""
    return names.component("environment", env), names.component("service", service)


def _target(env: str, service: str) -> tuple[str, str]:
    env, service = _names(env, service)
    if env not in services().settings.environments:
        raise InvalidInput("environment", "is not an environment of this deployment")
    return env, service


def _authorize(env: str, service: str, action: str, who: Caller | None = None) -> str:
    """The operator must hold update on specs/<env>/<service>/_credentials: Vault's
    policies decide, through the caller's own token (``who``, or the request's).
    Returns the caller's name. :raises AccessDenied: (recorded in the audit trail)."""
    who = who if who is not None else caller()
    access.require(who.store, services().store.paths.credential_grant(env, service),
                   access.UPDATE, auditor=services().audit, actor=who.display_name,
                   action=action, subject=f"service:{env}/{service}",
                   what=f"manage credentials of {env}/{service}")
    return who.display_name


def _render(minted: MintedToken, env: str) -> Response:
    s = services().settings
    resp = jsonify({
        "token": minted.token,
        "expires_at": rfc3339(minted.expires_at),
        "kid": minted.kid,
        "jti": minted.jti,
        "vault": {"auth_path": s.paths.auth_mount(env), "role": s.jwt_role},
    })
    resp.status_code = 201
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/<env>/<service>/credentials")
def mint(env: str, service: str) -> Response:
    env, service = _target(env, service)
    # A missing or unknown token is refused here, before the mint reads anything; then
    # Vault decides on the grant path while the mint's own reads run at the same time.
    who = caller()
    minted = services().credentials.mint(
        env, service, authorize=lambda: _authorize(env, service, "credential.mint", who))
    return _render(minted, env)


@bp.post("/<env>/<service>/credentials/refresh")
def refresh(env: str, service: str) -> Response:
    """The service presents its current, valid credential as a Bearer token; it is
    checked before the environment is (unlike ``_target``)."""
    env, service = _names(env, service)
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise Unauthenticated("present the current credential as 'Authorization: Bearer'")
    minted = services().credentials.refresh(auth[7:].strip(), env, service,
                                            services().settings.environments)
    return _render(minted, env)


@bp.delete("/<env>/<service>/credentials")
def revoke(env: str, service: str) -> Response:
    env, service = _target(env, service)
    actor = _authorize(env, service, "credential.revoke")
    generation = services().credentials.revoke(env, service, actor=actor)
    return jsonify({"environment": env, "service": service, "generation": generation,
                    "revoked_at": rfc3339(SystemClock().now())})


@bp.post("/<env>/<service>/acme-accounts")
def acme_account(env: str, service: str) -> Response:
    """An EAB for a stock ACME client of the service: ``eab_kid`` and ``eab_hmac_key``
    (shown once) for ``directory_url``."""
    env, service = _target(env, service)
    actor = _authorize(env, service, "acme.binding.create")
    resp = jsonify(services().acme.create_binding(env, service, actor))
    resp.status_code = 201
    resp.headers["Cache-Control"] = "no-store"
    return resp
