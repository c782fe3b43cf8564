"""/v1/certificates/<id>/bundle: a certificate rendered for its own service only.

The caller presents the service's certlocker credential (``Authorization: Bearer
<jwt>``). certlocker logs in to Vault WITH THAT JWT, reads the bundle with the
service's short-lived token, renders it, and revokes the token. Operators' Vault tokens
are refused: no operator reads private keys through certlocker, and certlocker's own
token cannot read them at all.

``POST`` with a JSON body ``{"format": ..., "password": ...}`` is the documented form.
``GET ?format=...`` serves the formats without a password (and PKCS#12 with the password
in the ``X-Certlocker-Password`` header). A password is never accepted in the URL: query
strings end up in access logs.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..audit.recorder import audited
from ..delivery import bundle_request
from ..errors import AccessDenied, CertlockerError, InvalidInput, Unauthenticated
from ..models import CertificateRef
from .context import services
from .json_input import json_body

bp = Blueprint("bundles", __name__, url_prefix="/v1/certificates")

PASSWORD_HEADER = "X-Certlocker-Password"
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_MAX_CREDENTIAL = 8192


def _service_credential() -> str:
    """The JWT from ``Authorization: Bearer``.

    :raises AccessDenied: for a Vault token (an operator's) or anything else that is not
        a service credential.
    :raises Unauthenticated: when no credential is given.
    """
    if request.headers.get("X-Vault-Token"):
        raise AccessDenied("bundles are served only to the certificate's own service: "
                           "present its certlocker credential as 'Authorization: Bearer', "
                           "not a Vault token")
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise Unauthenticated("present the service's certlocker credential as "
                              "'Authorization: Bearer <jwt>'")
    credential = auth[7:].strip()
    if len(credential) > _MAX_CREDENTIAL or not _JWT_SHAPE.match(credential):
        raise AccessDenied("bundles are served only to the certificate's own service, with "
                           "its certlocker credential (a JWT); this is not one")
    return credential


def _fields() -> dict[str, Any]:
    if "password" in request.args:
        raise InvalidInput("password", "must never be in the URL (it would be logged): "
                           f"send it in the JSON body of a POST or the {PASSWORD_HEADER} "
                           "header")
    if request.method == "POST":
        return json_body(services().settings.max_request_bytes)
    fields: dict[str, Any] = {k: v for k, v in request.args.items()}
    password = request.headers.get(PASSWORD_HEADER)
    if password is not None:
        fields["password"] = password
    return fields


@bp.route("/<certificate_id:cert_id>/bundle", methods=["GET", "POST"])
def bundle(cert_id: str) -> Response:
    s = services()
    ref = CertificateRef.parse_id(cert_id)
    credential = _service_credential()
    login = s.service_login
    subject = f"certificate:{ref.id}"
    # Vault accepts the credential (login) before the request is read: a forged or
    # revoked one is refused without learning what a valid request looks like.
    with login.session(credential, ref.environment) as session:
        wanted = bundle_request.parse(_fields(), ref)
        details = {"format": wanted.spec.name}
        try:
            stored = login.read_bundle(session, ref)
        except AccessDenied:
            audited(s.audit, session.display_name, "certificate.bundle", subject, "denied",
                    reason="Vault denied the service's token", details=details)
            raise AccessDenied(f"this credential's service may not read {ref.id}") from None
    try:
        rendered = bundle_request.render(wanted, stored)
    except CertlockerError as exc:
        audited(s.audit, session.display_name, "certificate.bundle", subject, "failed",
                reason=exc.detail, details=details)
        raise
    audited(s.audit, session.display_name, "certificate.bundle", subject, "success",
            details=details | {"serial": stored.serial, "vault_version": stored.version})
    body = rendered.body
    resp = jsonify(body) if isinstance(body, dict) else Response(body)
    if not isinstance(body, dict):
        resp.mimetype = rendered.media_type
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Disposition"] = (
        f'attachment; filename="{ref.id}.{rendered.filename}"')
    resp.headers["X-Certlocker-Sha256"] = stored.sha256_fingerprint
    resp.headers["X-Certlocker-Serial"] = stored.serial
    resp.headers["X-Certlocker-Vault-Version"] = str(stored.version)
    return resp
