"""Signing keys for service JWTs: generation, rotation, publication as a JWKS.

The keys live in one document in Vault (``system/jwt/signing-keys`` in the certlocker
KV mount), written with check-and-set so that several replicas agree on one key ring.
Persistence is behind ``SigningKeyStore``; the ``KeyRing`` keeps a copy in memory and
re-reads it every ``refresh_seconds`` or when asked for a ``kid`` it does not know, so
gunicorn workers and replicas converge after a rotation without coordination.

With ``track_version=True`` (what the API uses) the ring instead asks the store for the
document's version before every use (one small metadata read in Vault) and re-reads the
document only when that version changed: a rotation made by any worker or replica is then
used by all of them at once, for signing and in the published JWKS, instead of within
``refresh_seconds``.

Document format (``format`` 1)::

    {"format": 1,
     "keys": [{"kid": "...", "alg": "ES256", "private_key_pem": "<PKCS#8 PEM>",
               "created_at": "2025-01-01T00:00:00Z", "retired_at": null}, ...]}

Exactly one key has ``retired_at`` null: the active key, which signs. A retired key
stays published (JWKS, PEM list) until every token it may have signed has expired:
``retired_at + max_token_ttl + grace``. ``grace`` covers the verifiers' leeways (ours is
30 s; Vault's JWT auth accepts tokens up to ``expiration_leeway``, default 150 s, past
``exp``). Keys past that window are no longer published and are pruned from the
document on the next ``rotate`` or ``load_or_create``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import threading
from typing import Any, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..clock import Clock, parse_rfc3339, rfc3339
from ..errors import ConfigurationError, Conflict

DOCUMENT_FORMAT = 1
MAX_TOKEN_TTL_SECONDS = 86400
DEFAULT_GRACE_SECONDS = 300

_CURVES: dict[str, tuple[type[ec.EllipticCurve], str, int]] = {
    # alg: (curve, JWK crv, coordinate length in octets) -- RFC 7518 section 3.4, 6.2.1
    "ES256": (ec.SECP256R1, "P-256", 32),
    "ES384": (ec.SECP384R1, "P-384", 48),
}
ALGORITHMS: tuple[str, ...] = tuple(_CURVES)


class SigningKeyStore(Protocol):
    """Where the signing-key document is persisted.

    ``load`` returns ``(None, 0)`` when nothing is stored yet. ``save`` writes only if
    the stored version equals ``cas`` (0: only if nothing is stored) and returns the new
    version.
    """

    def load(self) -> tuple[dict[str, Any] | None, int]: ...

    def save(self, document: dict[str, Any], cas: int) -> int:
        """:raises certlocker.errors.Conflict: if the stored version is not ``cas``."""
        ...

    def version(self) -> int:
        """The stored version (0 if none), without reading the keys. Used only by a
        ``KeyRing`` built with ``track_version=True``."""
        ...


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """One EC signing key. Its repr shows the kid and dates, never private material."""

    kid: str
    alg: str
    created_at: dt.datetime
    retired_at: dt.datetime | None
    private_key: ec.EllipticCurvePrivateKey = dataclasses.field(repr=False, compare=False)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 7517/7518): no ``d`` member, ever."""
        jwk = _public_jwk_members(self.public_key, self.alg)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        ).decode("ascii")

    @classmethod
    def generate(cls, alg: str, now: dt.datetime) -> "SigningKey":
        """:raises ConfigurationError: if ``alg`` is not ES256 or ES384."""
        if alg not in _CURVES:
            raise ConfigurationError(f"JWT signing algorithm must be one of {ALGORITHMS}")
        private_key = ec.generate_private_key(_CURVES[alg][0]())
        return cls(kid=_thumbprint(private_key.public_key(), alg), alg=alg,
                   created_at=now.replace(microsecond=0), retired_at=None,
                   private_key=private_key)

    def to_document(self) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {"kid": self.kid, "alg": self.alg, "private_key_pem": pem,
                "created_at": rfc3339(self.created_at),
                "retired_at": rfc3339(self.retired_at) if self.retired_at else None}

    @classmethod
    def from_document(cls, entry: dict[str, Any]) -> "SigningKey":
        """:raises ConfigurationError: if the stored entry is unusable (no key material in
        the message)."""
        try:
            alg = entry["alg"]
            if alg not in _CURVES:
                raise ValueError("unsupported alg")
            private_key = serialization.load_pem_private_key(
                entry["private_key_pem"].encode("ascii"), password=None)
            if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
                    private_key.curve, _CURVES[alg][0]):
                raise ValueError("key does not match alg")
            retired = entry.get("retired_at")
            return cls(kid=str(entry["kid"]), alg=alg,
                       created_at=parse_rfc3339(entry["created_at"]),
                       retired_at=parse_rfc3339(retired) if retired else None,
                       private_key=private_key)
        except (KeyError, TypeError, ValueError, AttributeError,
                UnsupportedAlgorithm) as exc:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            raise ConfigurationError(
                f"stored JWT signing key {kid!r} is unusable ({type(exc).__name__})") from None


class KeyRing:
    """The signing keys, cached in memory, with rotation and publication.

    Thread safe. Build it with ``load_or_create``, or ``on_first_use`` where the store
    may be unavailable at construction (a process that must start while Vault is down).
    """

    def __init__(self, store: SigningKeyStore, clock: Clock, *, alg: str = "ES256",
                 max_token_ttl: int = MAX_TOKEN_TTL_SECONDS,
                 grace: int = DEFAULT_GRACE_SECONDS, refresh_seconds: int = 30,
                 unknown_kid_refresh_seconds: int = 5, track_version: bool = False) -> None:
        if alg not in _CURVES:
            raise ConfigurationError(f"JWT signing algorithm must be one of {ALGORITHMS}")
        if not 0 < max_token_ttl <= MAX_TOKEN_TTL_SECONDS:
            raise ConfigurationError(
                f"max_token_ttl must be between 1 and {MAX_TOKEN_TTL_SECONDS} seconds")
        self._store = store
        self._clock = clock
        self._alg = alg
        self._retention = dt.timedelta(seconds=max_token_ttl + grace)
        self._refresh = dt.timedelta(seconds=refresh_seconds)
        # An unknown kid costs a Vault read; bound how often a caller can force one.
        self._unknown_kid_refresh = dt.timedelta(seconds=unknown_kid_refresh_seconds)
        self._track_version = track_version
        self._lock = threading.RLock()
        self._keys: tuple[SigningKey, ...] = ()
        self._version = 0
        self._loaded_at: dt.datetime | None = None
        self._ensured = False  # an active key is known to be stored

    def __repr__(self) -> str:
        return (f"KeyRing(version={self._version}, "
                f"kids={[k.kid for k in self._keys]!r})")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def load_or_create(cls, store: SigningKeyStore, clock: Clock,
                       **options: Any) -> "KeyRing":
        """Load the stored key ring, creating the first key if none is stored.

        When several replicas start at once each tries to create with CAS 0; the losers
        get ``Conflict`` and load the winner's key, so all agree on one key.

        :raises ConfigurationError: if the stored document is unusable.
        :raises certlocker.errors.VaultUnavailable: from the store.
        """
        ring = cls(store, clock, **options)
        ring._ensure()
        return ring

    @classmethod
    def on_first_use(cls, store: SigningKeyStore, clock: Clock, **options: Any) -> "KeyRing":
        """As ``load_or_create``, but the store is first read by the first use of the
        ring (a failure then is that use's, and the next use tries again)."""
        return cls(store, clock, **options)

    # -- reading --------------------------------------------------------------------------
    @property
    def active(self) -> SigningKey:
        """The key that signs new tokens."""
        self._sync()
        with self._lock:
            key = self._active_or_none()
            if key is None:  # only if someone stored a document without an active key
                raise ConfigurationError("the JWT key ring has no active signing key")
            return key

    def key(self, kid: str) -> SigningKey | None:
        """The published key with this ``kid``, or None.

        An unknown kid triggers a re-read of the store (at most once per
        ``unknown_kid_refresh_seconds``): another worker may have rotated.
        """
        self._sync()
        with self._lock:
            found = self._published_by_kid().get(kid)
            if (found is None and not self._track_version
                    and self._may_refresh_for_unknown_kid()):
                self._reload()
                found = self._published_by_kid().get(kid)
            return found

    def published(self) -> list[SigningKey]:
        """Active key first, then retired keys whose tokens may still be valid."""
        self._sync()
        with self._lock:
            return list(self._published_by_kid().values())

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set (RFC 7517 section 5) for ``/.well-known/jwks.json``."""
        return {"keys": [key.public_jwk() for key in self.published()]}

    def public_keys_pem(self) -> list[str]:
        """SPKI PEMs of the published keys, for Vault's ``jwt_validation_pubkeys``."""
        return [key.public_pem() for key in self.published()]

    def refresh(self, force: bool = False) -> None:
        """Re-read the store if the copy is older than ``refresh_seconds`` (or always)."""
        if not force:
            self._sync()
            return
        with self._lock:
            self._reload()

    # -- writing --------------------------------------------------------------------------
    def rotate(self) -> SigningKey:
        """Make a new active key; the previous one stays published until its tokens
        have expired. Prunes keys past their publication window.

        If another replica rotates at the same moment, its rotation is accepted as ours
        (one new key, not two).

        :raises Conflict: if the store kept changing under us.
        """
        with self._lock:
            self._reload()
            previous = self._active_or_none()
            previous_kid = previous.kid if previous else None

            def change(keys: tuple[SigningKey, ...], now: dt.datetime
                       ) -> tuple[SigningKey, ...] | None:
                current = next((k for k in keys if k.retired_at is None), None)
                if current is not None and current.kid != previous_kid:
                    return None  # someone else rotated since we looked
                retired = tuple(dataclasses.replace(k, retired_at=now)
                                if k.retired_at is None else k for k in keys)
                return (SigningKey.generate(self._alg, now),) + retired

            self._write_with_retry(change)
            return self._active_or_none()  # type: ignore[return-value]

    # -- internals ------------------------------------------------------------------------
    def _write_with_retry(self, change: Any, attempts: int = 5) -> None:
        """Apply ``change(keys, now) -> keys | None`` with check-and-set; on a lost race
        reload and re-apply to the winner's document."""
        for _ in range(attempts):
            now = self._clock.now()
            changed = change(self._keys, now)
            if changed is None:
                return
            keys = tuple(k for k in changed if not self._expired(k, now))
            try:
                self._version = self._store.save(_document(keys), cas=self._version)
            except Conflict:
                self._reload()
                continue
            self._keys = keys
            self._loaded_at = now
            return
        raise Conflict("the JWT signing-key document kept changing; try again")

    def _with_active(self, keys: tuple[SigningKey, ...], now: dt.datetime
                     ) -> tuple[SigningKey, ...] | None:
        """The change ``load_or_create`` applies: ensure an active key, prune."""
        has_active = any(k.retired_at is None for k in keys)
        if has_active and not any(self._expired(k, now) for k in keys):
            return None
        return keys if has_active else (SigningKey.generate(self._alg, now),) + keys

    def _reload(self) -> None:
        document, version = self._store.load()
        self._keys = _parse(document)
        self._version = version
        self._loaded_at = self._clock.now()

    def _ensure(self) -> None:
        with self._lock:
            if not self._ensured:
                self._reload()
                self._write_with_retry(self._with_active)
                self._ensured = True

    def _sync(self) -> None:
        """Bring the copy up to date before a use; call without holding the lock.

        With ``track_version`` the store's version is read outside the lock, so the
        threads of a worker each wait for their own round trip instead of queueing
        behind one another's; the document is re-read (under the lock) only when that
        version differs from the copy's.
        """
        if not self._ensured:
            self._ensure()
            return
        if self._track_version:
            stored = self._store.version()
            with self._lock:
                if self._loaded_at is None or stored != self._version:
                    self._reload()
            return
        with self._lock:
            if (self._loaded_at is None
                    or self._clock.now() - self._loaded_at >= self._refresh):
                self._reload()

    def _may_refresh_for_unknown_kid(self) -> bool:
        return (self._loaded_at is None
                or self._clock.now() - self._loaded_at >= self._unknown_kid_refresh)

    def _active_or_none(self) -> SigningKey | None:
        return next((k for k in self._keys if k.retired_at is None), None)

    def _expired(self, key: SigningKey, now: dt.datetime) -> bool:
        return key.retired_at is not None and now >= key.retired_at + self._retention

    def _published_by_kid(self) -> dict[str, SigningKey]:
        now = self._clock.now()
        ordered = sorted(self._keys, key=lambda k: (k.retired_at is not None,
                                                    -(k.created_at.timestamp())))
        return {k.kid: k for k in ordered if not self._expired(k, now)}


def _document(keys: tuple[SigningKey, ...]) -> dict[str, Any]:
    return {"format": DOCUMENT_FORMAT, "keys": [k.to_document() for k in keys]}


def _parse(document: dict[str, Any] | None) -> tuple[SigningKey, ...]:
    if document is None:
        return ()
    if not isinstance(document, dict) or document.get("format") != DOCUMENT_FORMAT:
        raise ConfigurationError("the stored JWT signing-key document has an unknown format")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ConfigurationError("the stored JWT signing-key document has no key list")
    keys = tuple(SigningKey.from_document(e) for e in entries)
    if sum(1 for k in keys if k.retired_at is None) > 1:
        raise ConfigurationError("the stored JWT signing-key document has two active keys")
    return keys


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_jwk_members(public_key: ec.EllipticCurvePublicKey, alg: str) -> dict[str, str]:
    _, crv, size = _CURVES[alg]
    numbers = public_key.public_numbers()
    return {"kty": "EC", "crv": crv,
            "x": _b64url(numbers.x.to_bytes(size, "big")),
            "y": _b64url(numbers.y.to_bytes(size, "big"))}


def _thumbprint(public_key: ec.EllipticCurvePublicKey, alg: str) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): the required members, sorted, no spaces."""
    members = _public_jwk_members(public_key, alg)
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())
