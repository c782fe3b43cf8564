"""/v1/replacements: start a mass replacement (POST), follow one (GET .../<id>), list
them (GET). The work and its records: ``lifecycle.replacements``.

A selector that matches nothing is a 422 problem (``empty-selection``): an operation
with nothing to do is more likely a typo than an intent."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from ..errors import InvalidInput, NotFound
from ..lifecycle.policy.replacement import parse_request
from .context import authenticate_first, caller, services
from .json_input import json_body

bp = Blueprint("replacements", __name__, url_prefix="/v1/replacements")
authenticate_first(bp)


@bp.post("")
def start() -> Response:
    s = services()
    body = json_body(s.settings.max_request_bytes)
    parsed = parse_request(body, tuple(s.settings.issuers), s.settings.environments)
    who = caller()
    op = s.replacements.start(who.store, parsed, who.display_name)
    snapshot = s.replacements.snapshot(op.id, op)
    resp = jsonify(snapshot.to_json(with_items=False))
    resp.status_code = 202
    resp.headers["Location"] = url_for("replacements.show", op_id=op.id)
    return resp


def _flag(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise InvalidInput(name, "must be true or false")
    return raw == "true"


@bp.get("/<op_id>")
def show(op_id: str) -> Response:
    """The operation and its progress, computed from every certificate's status now.
    Only a caller who may read every certificate of it sees it (404 otherwise, as for a
    certificate they may not read)."""
    s = services()
    for key in request.args:
        if key != "items":
            raise InvalidInput(key[:64], "is not a parameter here")
    with_items = _flag("items", True)
    snapshot = s.replacements.snapshot(op_id)
    if not s.replacements.may_see(caller().store, snapshot):
        raise NotFound(f"no replacement {op_id[:64]}")
    return jsonify(snapshot.to_json(with_items=with_items))


@bp.get("")
def index() -> Response:
    """Every operation the caller may see, newest first, without per-certificate rows."""
    s = services()
    who = caller()
    found = []
    for op_id in s.replacements.ids():
        try:
            snapshot = s.replacements.snapshot(op_id)
        except NotFound:
            continue
        if s.replacements.may_see(who.store, snapshot):
            found.append(snapshot.to_json(with_items=False))
    found.sort(key=lambda o: o["created_at"], reverse=True)
    return jsonify({"items": found})
