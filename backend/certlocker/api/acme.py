"""/acme/<env>/...: certlocker's ACME server (RFC 8555) over HTTP.

Only moves bytes: the URL a request was signed for is rebuilt from ``public_url`` (what
clients were given, whatever proxy is in front), the body goes to ``acmeserver.server``
as it came, and every answer carries a fresh ``Replay-Nonce``, the directory as
``Link: rel="index"`` and ``Cache-Control: no-store``. Errors are ACME problem documents
(``urn:ietf:params:acme:error:*``, RFC 8555 section 6.7), never a 500 for bad input.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..acmeserver.problems import AcmeProblem
from ..acmeserver.server import AcmeServer, Reply
from ..errors import CertlockerError
from .context import services

log = logging.getLogger(__name__)
bp = Blueprint("acme", __name__, url_prefix="/acme/<env>")
JOSE_JSON = "application/jose+json"


def _server() -> AcmeServer:
    return services().acme


def _url() -> str:
    return services().settings.public_url.rstrip("/") + request.path


def _body() -> bytes:
    if request.mimetype != JOSE_JSON:
        raise AcmeProblem("malformed", f"Content-Type must be {JOSE_JSON}", status=415)
    return request.get_data(cache=False)


def _decorate(resp: Response, env: str) -> Response:
    server = _server()
    try:
        resp.headers["Replay-Nonce"] = server.nonce()
    except CertlockerError:  # Vault down: the answer goes out without a nonce
        pass
    resp.headers["Link"] = ", ".join(filter(None, (
        resp.headers.get("Link"), f'<{server.directory_url(env)}>;rel="index"')))
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _render(reply: Reply, env: str) -> Response:
    if reply.text is not None:
        resp = Response(reply.text, status=reply.status, mimetype=reply.content_type)
    elif reply.body is not None:
        resp = jsonify(reply.body)
        resp.status_code = reply.status
    else:
        resp = Response(b"", status=reply.status)
    for name, value in reply.headers.items():
        resp.headers[name] = value
    return _decorate(resp, env)


@bp.errorhandler(AcmeProblem)
def _problem(exc: AcmeProblem) -> Response:
    resp = jsonify(exc.document())
    resp.status_code = exc.status
    resp.mimetype = "application/problem+json"
    for name, value in exc.headers.items():
        resp.headers[name] = value
    return _decorate(resp, (request.view_args or {}).get("env", ""))


@bp.errorhandler(CertlockerError)
def _domain(exc: CertlockerError) -> Response:
    """A failure of certlocker's own (Vault unreachable): serverInternal with its status."""
    if exc.status >= 500:
        log.warning("acme_server.failed", extra={"error": type(exc).__name__,
                                                 "path": request.path})
    code = "serverInternal" if exc.status >= 500 else "malformed"
    return _problem(AcmeProblem(code, exc.detail[:500], status=exc.status))


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    """What werkzeug refuses inside an ACME resource (a body over the size limit)."""
    return _problem(AcmeProblem("malformed", exc.description or exc.name,
                                status=exc.code or 400))


@bp.get("/directory")
def directory(env: str) -> Response:
    resp = _render(_server().directory(env), env)
    del resp.headers["Replay-Nonce"]
    return resp


@bp.route("/new-nonce", methods=["GET", "HEAD"])
def new_nonce(env: str) -> Response:
    _server().check_environment(env)
    return _decorate(Response(b"", status=200 if request.method == "HEAD" else 204), env)


@bp.get("/renewal-info/<path:cert_id>")
def renewal_info(env: str, cert_id: str) -> Response:
    return _render(_server().renewal_info(env, cert_id), env)


@bp.post("/new-account")
def new_account(env: str) -> Response:
    return _render(_server().new_account(env, _url(), _body()), env)


@bp.post("/account/<account_id>")
def account(env: str, account_id: str) -> Response:
    return _render(_server().account(env, _url(), _body(), account_id), env)


@bp.post("/account/<account_id>/orders")
def account_orders(env: str, account_id: str) -> Response:
    return _render(_server().account_orders(env, _url(), _body(), account_id), env)


@bp.post("/key-change")
def key_change(env: str) -> Response:
    return _render(_server().key_change(env, _url(), _body()), env)


@bp.post("/new-order")
def new_order(env: str) -> Response:
    return _render(_server().new_order(env, _url(), _body()), env)


@bp.post("/order/<account_id>/<order_id>")
def order(env: str, account_id: str, order_id: str) -> Response:
    return _render(_server().order(env, _url(), _body(), account_id, order_id), env)


@bp.post("/authz/<account_id>/<order_id>/<int:index>")
def authorization(env: str, account_id: str, order_id: str, index: int) -> Response:
    return _render(_server().authorization(env, _url(), _body(), account_id, order_id,
                                           index), env)


@bp.post("/chall/<account_id>/<order_id>/<int:index>")
def challenge(env: str, account_id: str, order_id: str, index: int) -> Response:
    return _render(_server().challenge(env, _url(), _body(), account_id, order_id, index),
                   env)


@bp.post("/finalize/<account_id>/<order_id>")
def finalize(env: str, account_id: str, order_id: str) -> Response:
    return _render(_server().finalize(env, _url(), _body(), account_id, order_id), env)


@bp.post("/cert/<account_id>/<order_id>")
def certificate(env: str, account_id: str, order_id: str) -> Response:
    return _render(_server().certificate(env, _url(), _body(), account_id, order_id), env)


@bp.post("/revoke-cert")
def revoke_cert(env: str) -> Response:
    return _render(_server().revoke_cert(env, _url(), _body()), env)
