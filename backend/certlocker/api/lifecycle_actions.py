"""/v1/certificates: revoke (POST .../<id>/revoke), retire (DELETE .../<id>), and the
cleanup report (GET .../cleanup). Vault decides who may, through the caller's token."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..clock import rfc3339
from ..errors import InvalidInput, NotFound
from ..models import CertificateRef, CertificateStatus
from .certificates import render
from .context import authenticate_first, caller, services
from .json_input import json_body, wait_seconds

bp = Blueprint("lifecycle_actions", __name__, url_prefix="/v1/certificates")
authenticate_first(bp)
REVOKE_FIELDS = {"reason", "replace"}
RETIRE_FIELDS = {"revoke"}


@bp.post("/<certificate_id:cert_id>/revoke")
def revoke(cert_id: str) -> Response:
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    wait = wait_seconds()
    body = json_body(s.settings.max_request_bytes)
    unknown = set(body) - REVOKE_FIELDS
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "is not a field of a revocation request")
    if "reason" not in body:
        raise InvalidInput("reason", "is required (an RFC 5280 reason name)")
    replace = body.get("replace")
    if replace is not None and not isinstance(replace, bool):
        raise InvalidInput("replace", "must be true or false")
    who = caller()
    future = services().revocation.revoke(who.store, ref, body["reason"], replace,
                                         actor=who.display_name)
    done = False
    if wait:
        try:
            future.result(timeout=wait)
            done = True
        except cf.TimeoutError:
            pass
    found = s.store.read_status(ref)
    resp = jsonify(_describe(ref, found[0] if found else None))
    resp.status_code = 200 if done else 202
    return resp


@bp.delete("/<certificate_id:cert_id>")
def retire(cert_id: str) -> Response:
    """Retire: 200 once every step up to checking the targets is done, 202 while a step
    waits for the reconciler (the CA could not be reached: see ``retirement``)."""
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    revoke = _retire_revoke(s.settings.max_request_bytes)
    who = caller()
    status, record = s.retirement.retire(who.store, ref, actor=who.display_name,
                                         revoke=revoke)
    resp = jsonify(_tombstone(ref, status, record.view() if record else None))
    resp.status_code = 202 if record is not None and record.phase in _WAITING else 200
    return resp


_WAITING = ("requested", "revoking", "credentials", "destroying")


def _retire_revoke(max_bytes: int) -> bool:
    """``revoke`` from ``?revoke=true|false`` or a JSON body ``{"revoke": false}``;
    True when neither says.

    :raises InvalidInput: for anything else."""
    revoke: object = True
    raw = request.args.get("revoke")
    for key in request.args:
        if key != "revoke":
            raise InvalidInput(key[:64], "is not a parameter of a retirement")
    if raw is not None:
        if raw not in ("true", "false"):
            raise InvalidInput("revoke", "must be true or false")
        revoke = raw == "true"
    if request.content_length or request.headers.get("Transfer-Encoding"):
        body = json_body(max_bytes)
        unknown = set(body) - RETIRE_FIELDS
        if unknown:
            raise InvalidInput(sorted(unknown)[0][:64], "is not a field of a retirement")
        if "revoke" in body:
            if not isinstance(body["revoke"], bool):
                raise InvalidInput("revoke", "must be true or false")
            revoke = body["revoke"]
    return bool(revoke)


@bp.get("/cleanup")
def cleanup() -> Response:
    who = caller()
    items = [item.to_json() for item in services().retirement.leftovers(who.store)]
    return jsonify({"items": items})


def _describe(ref: CertificateRef, status: CertificateStatus | None) -> dict[str, Any]:
    s = services()
    try:
        body = render(s.certificates.view(s.store, ref), s.store.paths)
    except NotFound:
        body = {"id": ref.id, "status": status.state.value if status else None}
    body["revocation"] = status.revocation.to_json() if status and status.revocation else None
    return body


def _tombstone(ref: CertificateRef, status: CertificateStatus,
               retirement: dict[str, Any] | None = None) -> dict[str, Any]:
    current = status.current
    return {"id": ref.id, "status": status.state.value,
            "retired_at": rfc3339(status.retired_at) if status.retired_at else None,
            "last": None if current is None else {
                "serial": current.serial, "sha256_fingerprint": current.sha256_fingerprint,
                "not_after": rfc3339(current.not_after)},
            "retirement": retirement,
            "targets": [t.to_json() for t in status.targets]}
