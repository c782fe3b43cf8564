"""/v1/grants/<env>/<service>: the names an administrator granted a service.

Read and written with the caller's own token, so Vault's policies decide: administrators
write (``policies/operator-admin.hcl``), a team reads its own services' grants. The same
record is managed with the Vault CLI at ``grants/<env>/<service>``.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import names
from ..errors import InvalidInput
from ..ownership import Grant, parse_grant
from .context import authenticate_first, caller, services
from .json_input import json_body

bp = Blueprint("grants", __name__, url_prefix="/v1/grants")
authenticate_first(bp)


def _render(environment: str, service: str, grant: Grant, version: int) -> Response:
    return jsonify({"environment": environment, "service": service,
                    **grant.to_record(), "version": version,
                    "vault": {"path": services().store.paths.api_path(
                        services().store.paths.grant(environment, service))}})


def _names(environment: str, service: str) -> tuple[str, str]:
    env = names.component("environment", environment)
    if env not in services().settings.environments:
        raise InvalidInput("environment", "must be one of "
                           + ", ".join(services().settings.environments))
    return env, names.component("service", service)


@bp.get("/<environment>/<service>")
def show(environment: str, service: str) -> Response:
    who = caller()
    env, svc = _names(environment, service)
    grant, version = services().certificates.ownership.grant(env, svc, reader=who.store)
    return _render(env, svc, grant, version)


@bp.put("/<environment>/<service>")
def replace(environment: str, service: str) -> Response:
    s = services()
    who = caller()
    env, svc = _names(environment, service)
    grant = parse_grant(json_body(s.settings.max_request_bytes))
    s.certificates.ownership.put(who.store, env, svc, grant, actor=who.display_name)
    grant, version = s.certificates.ownership.grant(env, svc)
    return _render(env, svc, grant, version)
