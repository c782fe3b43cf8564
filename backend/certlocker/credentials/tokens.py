"""Minting and verifying service JWTs.

A service credential is a JWT (RFC 7519) signed by the ``KeyRing``'s active key::

    header  {"alg": "ES256", "kid": "<RFC 7638 thumbprint>", "typ": "JWT"}
    claims  {"iss": <public URL>, "sub": <service>, "aud": <deployment audience>,
             "env": <environment>, "gen": <service credential generation>,
             "credential": "<service>.<gen>",
             "iat": .., "nbf": .., "exp": .., "jti": <random>}

Vault's JWT auth (one mount per environment, ``auth/certlocker-<env>``) checks the
signature, ``iss``, ``aud``, ``exp``/``nbf`` and ``env`` (a bound claim); ``credential``
is the role's ``user_claim``: the entity alias of one credential generation, whose
entity (created by certlocker, see ``certlocker.vault.identity``) names the service.
``verify`` is certlocker's own check, used where a service presents its current
credential to obtain a fresh one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from typing import Any, Callable

import jwt

from ..clock import Clock
from ..errors import ConfigurationError, InvalidInput, Unauthenticated
from ..names import component
from .keys import ALGORITHMS, MAX_TOKEN_TTL_SECONDS, KeyRing, SigningKey

DEFAULT_TTL_SECONDS = 3600
MIN_TTL_SECONDS = 60
# Clock skew between certlocker replicas and the machine that minted the token. Small:
# the tokens are short-lived and a revoked generation must stop working promptly.
LEEWAY_SECONDS = 30
# Far above any token we mint (~1 KiB); refuses to parse arbitrarily large input.
MAX_TOKEN_LENGTH = 8192
REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]


@dataclasses.dataclass(frozen=True)
class MintedToken:
    token: str = dataclasses.field(repr=False)
    jti: str
    expires_at: dt.datetime
    kid: str


@dataclasses.dataclass(frozen=True)
class Claims:
    """The verified claims of a service credential."""

    environment: str
    service: str
    generation: int
    jti: str
    kid: str
    issued_at: dt.datetime
    not_before: dt.datetime
    expires_at: dt.datetime


GenerationLookup = Callable[[str, str], int]


class TokenMinter:
    """Mints and verifies service credentials.

    ``current_generation(environment, service)`` returns the service's current credential
    generation; ``verify`` refuses tokens of an older generation (they were revoked).
    """

    def __init__(self, keyring: KeyRing, clock: Clock, *, issuer: str,
                 current_generation: GenerationLookup, audience: str = "certlocker",
                 default_ttl: int = DEFAULT_TTL_SECONDS,
                 max_ttl: int = MAX_TOKEN_TTL_SECONDS) -> None:
        if not issuer:
            raise ConfigurationError("the JWT issuer must not be empty")
        if not audience:
            raise ConfigurationError("the JWT audience must not be empty")
        if not MIN_TTL_SECONDS <= max_ttl <= MAX_TOKEN_TTL_SECONDS:
            raise ConfigurationError(
                f"max JWT ttl must be between {MIN_TTL_SECONDS} and {MAX_TOKEN_TTL_SECONDS}")
        if not MIN_TTL_SECONDS <= default_ttl <= max_ttl:
            raise ConfigurationError(
                f"JWT ttl must be between {MIN_TTL_SECONDS} and {max_ttl} seconds")
        self._keyring = keyring
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._current_generation = current_generation
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    def signing_key(self) -> SigningKey:
        """The key ``mint`` signs with now (the key ring's active key, current as of this
        call): fetch it ahead, alongside other reads, and pass it to ``mint``."""
        return self._keyring.active

    def mint(self, environment: str, service: str, generation: int,
             ttl: int | None = None, key: SigningKey | None = None) -> MintedToken:
        """Sign a credential for ``service`` in ``environment`` with ``key`` (from
        ``signing_key`` during this request), or else the active key.

        :raises InvalidInput: for a bad environment, service, generation or ttl.
        """
        environment = component("environment", environment)
        service = component("service", service)
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise InvalidInput("generation", "must be a non-negative integer")
        ttl = self._default_ttl if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise InvalidInput("ttl", "must be an integer number of seconds")
        if not MIN_TTL_SECONDS <= ttl <= self._max_ttl:
            raise InvalidInput(
                "ttl", f"must be between {MIN_TTL_SECONDS} and {self._max_ttl} seconds")
        key = key if key is not None else self._keyring.active
        issued = int(self._clock.now().timestamp())
        jti = secrets.token_urlsafe(18)
        # ``credential`` is the Vault role's user_claim: one entity alias per
        # generation, so revoking a generation disables exactly its identity.
        claims = {"iss": self._issuer, "sub": service, "aud": self._audience,
                  "env": environment, "gen": generation,
                  "credential": f"{service}.{generation}",
                  "iat": issued, "nbf": issued, "exp": issued + ttl, "jti": jti}
        token = jwt.encode(claims, key.private_key, algorithm=key.alg,
                           headers={"kid": key.kid, "typ": "JWT"})
        return MintedToken(token=token, jti=jti, kid=key.kid,
                           expires_at=_utc(issued + ttl))

    def verify(self, token: str, expected_environment: str | None = None) -> Claims:
        """Check a credential certlocker minted and return its claims.

        Times (``exp``, ``nbf``, ``iat``) are checked by pyjwt against the system clock:
        pyjwt has no clock hook.

        :raises Unauthenticated: with the reason; the message never contains the token.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("credential is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("credential is malformed") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Unauthenticated("credential algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("credential has no key id")
        key = self._keyring.key(kid)
        if key is None:
            raise Unauthenticated("credential was signed by an unknown key")
        if key.alg != alg:
            raise Unauthenticated("credential algorithm does not match its key")
        try:
            payload = jwt.decode(
                token,
                key=key.public_key,
                # Only the key's own algorithm, which is one of ALGORITHMS (ES256/ES384):
                # never "none", never HS* (a public key must not become an HMAC secret).
                algorithms=[key.alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    "strict_aud": True,
                    "require": REQUIRED_CLAIMS,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("credential has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("credential is not yet valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("credential audience is wrong") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("credential issuer is wrong") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"credential lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("credential signature is invalid") from None
        except jwt.PyJWTError:
            raise Unauthenticated("credential is invalid") from None
        return self._check_claims(payload, kid, expected_environment)

    def _check_claims(self, payload: dict[str, Any], kid: str,
                      expected_environment: str | None) -> Claims:
        try:
            service = component("sub", payload["sub"])
            environment = component("env", payload.get("env"))
        except InvalidInput:
            raise Unauthenticated("credential names no valid service/environment") from None
        generation = payload.get("gen")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise Unauthenticated("credential has no valid generation")
        iat, nbf, exp = payload["iat"], payload["nbf"], payload["exp"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, nbf, exp)):
            raise Unauthenticated("credential times must be integers")
        if exp - iat > self._max_ttl:
            raise Unauthenticated("credential lifetime exceeds the maximum")
        if expected_environment is not None and environment != expected_environment:
            raise Unauthenticated("credential is for another environment")
        if generation < self._current_generation(environment, service):
            raise Unauthenticated("credential has been revoked")
        return Claims(environment=environment, service=service, generation=generation,
                      jti=payload["jti"], kid=kid, issued_at=_utc(iat),
                      not_before=_utc(nbf), expires_at=_utc(exp))


def _utc(timestamp: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
