"""What a caller may ask of ``/v1/certificates/<id>/bundle``, validated, and the answer.

Pure: no Flask, no Vault. The API validates a request with :func:`parse` BEFORE it logs
in to Vault as the service (a short password costs nothing), then renders the bundle it
read with :func:`render`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..errors import Conflict, InvalidInput
from ..models import CertificateRef
from . import formats

FIELDS = frozenset({"format", "password", "alias", "k8s_name", "k8s_namespace"})
_BUNDLE_FIELDS = frozenset({"certificate", "chain", "private_key"})


@dataclasses.dataclass(frozen=True)
class BundleRequest:
    spec: formats.FormatSpec
    password: str | None = dataclasses.field(default=None, repr=False)
    alias: str | None = None
    k8s_name: str | None = None
    k8s_namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class Rendered:
    """The response body: ``bytes`` (binary), ``str`` (text) or ``{filename: text}``."""

    body: bytes | str | dict[str, str] = dataclasses.field(repr=False)
    media_type: str
    filename: str


def parse(fields: Mapping[str, Any], ref: CertificateRef) -> BundleRequest:
    """Validate a bundle request for ``ref``.

    ``format`` is required; ``password`` is required for (and only accepted by) the
    PKCS#12 formats; ``alias`` (Java; default: the certificate's name) and
    ``k8s_name``/``k8s_namespace`` (default ``<service>-<name>-tls`` in the namespace
    named like the environment) apply to their format only.

    :raises InvalidInput: an unknown field or format, or a refused password; the reason
        never repeats the password.
    """
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], "is not a known field (known: "
                           + ", ".join(sorted(FIELDS)) + ")")
    if fields.get("format") is None:
        raise InvalidInput("format", "is required: one of " + ", ".join(sorted(formats.FORMATS)))
    spec = formats.format_spec(fields.get("format"))
    password = fields.get("password")
    if spec.needs_password:
        if password is None:
            raise InvalidInput("password", f"is required for format {spec.name}")
        formats.validate_pkcs12_password(password)
    elif password is not None:
        raise InvalidInput("password", f"is only accepted by the PKCS#12 formats, "
                           f"not {spec.name}")
    alias = _optional(fields, "alias", spec.name == "java")
    k8s_name = _optional(fields, "k8s_name", spec.needs_k8s_name)
    k8s_namespace = _optional(fields, "k8s_namespace", spec.needs_k8s_name)
    if spec.name == "java":
        alias = alias or ref.name
    if spec.needs_k8s_name:
        k8s_name = k8s_name or f"{ref.service}-{ref.name}-tls"
        k8s_namespace = k8s_namespace or ref.environment
    return BundleRequest(spec, password, alias, k8s_name, k8s_namespace)


def render(request: BundleRequest, bundle: formats.PemBundle) -> Rendered:
    """Render ``bundle`` as ``request`` asks.

    :raises InvalidInput: a Java alias or Kubernetes name the format refuses.
    :raises Conflict: the stored bundle itself is unusable (unparseable, or a key that
        does not match the leaf); the caller cannot fix that, certlocker must reissue.
    """
    spec = request.spec
    try:
        if spec.name == "java":
            body: Any = formats.java_pkcs12(bundle, request.password or "", request.alias or "")
        elif spec.needs_password:
            body = spec.render(bundle, request.password)
        elif spec.needs_k8s_name:
            body = spec.render(bundle, request.k8s_name, request.k8s_namespace)
        else:
            body = spec.render(bundle)
    except InvalidInput as exc:
        if exc.field in _BUNDLE_FIELDS:
            raise Conflict(f"the stored bundle is unusable ({exc.detail}); renew the "
                           "certificate") from None
        raise
    return Rendered(body, spec.media_type, spec.filename)


def _optional(fields: Mapping[str, Any], name: str, applies: bool) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not applies:
        raise InvalidInput(name, "does not apply to this format")
    if not isinstance(value, str) or not value:
        raise InvalidInput(name, "must be a non-empty string")
    return value
