"""Reading a certificate's bundle AS its service: log in with the service's own JWT.

certlocker's own token cannot read ``certs/...`` data (its policy has no read there, by
design: no single system holds every key). When a service asks certlocker to render its
certificate into a format an agent template cannot produce (PKCS#12, Java), certlocker
logs in at ``auth/<prefix><env>`` (role ``service``) with the JWT the service presented,
reads the bundle with the resulting short-lived token, and revokes that token at once.
Vault's templated service policy decides what the token may read; certlocker adds
nothing to it and keeps nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Iterator

import hvac.exceptions as hx
import requests

from ..errors import NotFound, Unauthenticated, VaultUnavailable
from ..models import CertificateRef
from .client import translated
from .store import VaultStore

log = logging.getLogger(__name__)
_MAX_REASON = 200


@dataclasses.dataclass(frozen=True)
class ServiceBundle:
    """One version of ``certs/<env>/<service>/<name>``, as the service reads it."""

    certificate: str
    chain: str
    private_key: str = dataclasses.field(repr=False)
    sha256_fingerprint: str = ""
    serial: str = ""
    not_after: str = ""
    version: int = 0


@dataclasses.dataclass(frozen=True)
class ServiceSession:
    """A Vault session of one service credential: its store and who Vault says it is."""

    store: VaultStore
    display_name: str


class ServiceLogin:
    """Logs in with service credentials at the environment's JWT auth mount."""

    def __init__(self, store: VaultStore, role: str) -> None:
        self._store = store
        self._role = role

    @contextlib.contextmanager
    def session(self, credential: str, environment: str) -> Iterator[ServiceSession]:
        """Log in with ``credential`` (a certlocker JWT) at ``auth/<prefix><environment>``;
        the Vault token is revoked (``auth/token/revoke-self``) when the block ends.

        :raises Unauthenticated: Vault refused the JWT (bad signature, expired, another
            environment, a revoked generation).
        :raises VaultUnavailable: Vault could not be reached.
        """
        mount = self._store.paths.auth_mount(environment)
        anonymous = self._store.for_token("")
        with translated(f"auth/{mount}/login"):
            try:
                resp = anonymous.hvac.auth.jwt.jwt_login(
                    role=self._role, jwt=credential, path=mount, use_token=False)
            except hx.InvalidRequest as exc:  # signature, claims, expiry: Vault says which
                raise Unauthenticated("Vault refused the service credential at login: "
                                      + _reason(exc, credential)) from None
            except (hx.Forbidden, hx.Unauthorized):
                raise Unauthenticated("Vault refused the service credential at login "
                                      "(revoked, or not valid for this environment)") from None
        auth = resp.get("auth") or {}
        token = auth.get("client_token")
        if not token:
            raise VaultUnavailable("Vault's login answer carried no token")
        service = self._store.for_token(token)
        try:
            yield ServiceSession(service, str(auth.get("display_name") or "service"))
        finally:
            _revoke(service, auth.get("accessor"))

    def read_bundle(self, session: ServiceSession, ref: CertificateRef) -> ServiceBundle:
        """Read the current bundle of ``ref`` with the service's token (capability: read
        on ``<mount>/data/certs/<env>/<service>/<name>``).

        :raises AccessDenied: the credential belongs to another service.
        :raises NotFound: nothing has been issued at that path yet.
        """
        got = session.store.read(self._store.paths.cert(ref))
        if got is None or not got.data.get("certificate"):
            raise NotFound(f"certificate {ref.id} has no issued bundle yet")
        data = got.data
        return ServiceBundle(
            certificate=str(data.get("certificate") or ""),
            chain=str(data.get("chain") or ""),
            private_key=str(data.get("private_key") or ""),
            sha256_fingerprint=str(data.get("sha256_fingerprint") or ""),
            serial=str(data.get("serial") or ""),
            not_after=str(data.get("not_after") or ""),
            version=got.version,
        )


def _reason(exc: hx.VaultError, credential: str) -> str:
    text = " ".join(str(e) for e in (exc.errors or [])) if exc.errors else "rejected"
    text = text.replace(credential, "<credential>") if credential else text
    return text[:_MAX_REASON]


def _revoke(service: VaultStore, accessor: str | None) -> None:
    """Revoke the short-lived token; on failure it still expires at the role's TTL."""
    try:
        service.hvac.auth.token.revoke_self()
    except (hx.VaultError, requests.RequestException) as exc:
        log.warning("service_login.revoke_failed",
                    extra={"accessor": accessor, "error": type(exc).__name__})
