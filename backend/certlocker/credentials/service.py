"""Service credentials end to end: generations, Vault identities, tokens.

A service's credentials belong to a *generation* (``system/credentials/<env>/<service>``).
Minting makes sure the generation's Vault identity exists, then signs a JWT for it.
Revoking moves the service to the next generation and disables the old generation's
identity, so every credential of the old one fails at Vault login at once, and Vault
tokens already obtained with them stop working.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import Any, Callable, Collection, Protocol

from .. import cas
from ..errors import CertlockerError, Unauthenticated
from ..audit.recorder import Auditor, NoAudit, audited
from ..names import component
from .tokens import Claims, MintedToken, TokenMinter

log = logging.getLogger(__name__)

# Two reads per mint run on the lookup pool: enough for the request threads of a worker.
LOOKUP_THREADS = 16


class Identities(Protocol):
    def ensure(self, environment: str, service: str, generation: int) -> None: ...

    def disable(self, environment: str, service: str, generation: int) -> bool: ...


class GenerationStore(Protocol):
    def read_json(self, logical: str) -> tuple[dict[str, Any] | None, int]: ...

    def write_json(self, logical: str, document: dict[str, Any], cas: int | None) -> int: ...


class CredentialService:
    def __init__(self, store: GenerationStore, generation_path: Any, identities: Identities,
                 minter_factory: Any, audit: Auditor | None = None, *,
                 lookups: Executor) -> None:
        """``lookups`` runs a mint's two reads side by side (``LOOKUP_THREADS`` threads,
        made per process: the API may build this before gunicorn forks)."""
        self._store = store
        self._audit = audit or NoAudit()
        self._path = generation_path  # (env, service) -> logical path
        self._identities = identities
        self.minter: TokenMinter = minter_factory(self.generation)
        self._lookups = lookups

    def generation(self, environment: str, service: str) -> int:
        doc, _ = self._store.read_json(self._path(environment, service))
        return int(doc["generation"]) if doc else 1

    def mint(self, environment: str, service: str, ttl: int | None = None,
             actor: str = "operator", action: str = "credential.mint",
             authorize: Callable[[], str] | None = None) -> MintedToken:
        """Sign a credential of the service's current generation and record it.

        The reads a mint depends on are independent, so they run at the same time: the
        service's generation and the signing key (each read fresh from the store) on the
        service's pool, and ``authorize`` (if given) in the calling thread. The mint waits
        for the slowest of them instead of their sum. ``authorize`` returns the actor's
        name; if it raises, that exception propagates and nothing is created, signed or
        recorded here (the reads' results are dropped).

        :raises InvalidInput: for a bad environment, service or ttl.
        """
        environment = component("environment", environment)
        service = component("service", service)
        signing_key = self._lookups.submit(self.minter.signing_key)
        if authorize is None:
            generation = self.generation(environment, service)
        else:
            pending = self._lookups.submit(self.generation, environment, service)
            actor = authorize()
            generation = pending.result()
        key = signing_key.result()
        self._identities.ensure(environment, service, generation)
        minted = self.minter.mint(environment, service, generation, ttl, key=key)
        log.info("credential.minted", extra={"environment": environment, "service": service,
                                             "generation": generation, "jti": minted.jti})
        audited(self._audit, actor, action, f"service:{environment}/{service}", "success",
                details={"generation": generation, "jti": minted.jti, "kid": minted.kid,
                         "expires_at": minted.expires_at.isoformat()})
        return minted

    def refresh(self, token: str, environment: str, service: str,
                environments: Collection[str]) -> MintedToken:
        """A service trades its current valid credential for a fresh one.

        The credential is checked before anything about the deployment is: a caller
        without one learns nothing, not even which ``environments`` it serves.

        :raises Unauthenticated: for an invalid, expired or revoked credential, one of
            another service, or of an environment no longer served.
        """
        subject = f"service:{environment}/{service}"
        try:
            claims: Claims = self.minter.verify(token, expected_environment=environment)
            if claims.service != service:
                raise Unauthenticated("the credential belongs to another service")
            if environment not in environments:
                raise Unauthenticated("the credential's environment is no longer served")
        except CertlockerError as exc:
            audited(self._audit, subject, "credential.refresh", subject, "denied",
                    reason=exc.detail)
            raise
        return self.mint(environment, service, actor=subject, action="credential.refresh")

    def revoke(self, environment: str, service: str, actor: str = "operator") -> int:
        """Revoke every credential of the service; returns the new generation."""
        environment = component("environment", environment)
        service = component("service", service)
        path = self._path(environment, service)

        def bump(doc: dict[str, Any] | None) -> dict[str, Any]:
            return {"generation": (int(doc["generation"]) if doc else 1) + 1}

        written = cas.patch(lambda: self._store.read_json(path), bump,
                            lambda new, version: self._store.write_json(path, new, cas=version),
                            attempts=5,
                            conflict=f"credentials of {environment}/{service} keep changing")
        old = int(written["generation"]) - 1
        self._identities.disable(environment, service, old)
        log.info("credential.revoked", extra={"environment": environment,
                                              "service": service, "generation": old})
        audited(self._audit, actor, "credential.revoke", f"service:{environment}/{service}",
                "success", details={"revoked_generation": old, "generation": old + 1})
        return old + 1
