"""Authenticating one ACME request: the flattened JWS of RFC 8555 section 6.2.

Checked here: the body is a flattened JWS JSON object; everything sits in the protected
header; ``alg`` is one certlocker accepts (RS256, ES256 at least; never ``none`` or a MAC)
and fits the key; ``url`` is the resource's own URL; exactly one of ``jwk`` (new account,
revocation with the certificate's key) and ``kid`` (an account URL); the signature
verifies; an RSA key has at least 2048 bits. The nonce is only decoded here: ``nonces``
redeems it, once the signature is known to be good.
"""

from __future__ import annotations

import dataclasses

import json
from typing import Any, Callable, cast

import josepy as jose
from acme import jws as acme_jws
from cryptography.hazmat.primitives import hashes

from .problems import AcmeProblem

#: What certlocker verifies (RFC 8555 section 6.2: RS256 must, ES256 should).
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
MAX_BODY = 64 * 1024
CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}

KeyLookup = Callable[[str], jose.JWK]


@dataclasses.dataclass(frozen=True)
class Signed:
    """A verified request: its payload (b"" for POST-as-GET), the key that signed it,
    the account URL (``kid``) when an account signed it, and its nonce."""

    payload: bytes
    key: jose.JWK
    kid: str | None
    nonce: str | None
    url: str

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object.

        :raises AcmeProblem: malformed, also for POST-as-GET where a body is needed."""
        try:
            value = json.loads(self.payload)
        except (ValueError, UnicodeDecodeError):
            raise AcmeProblem("malformed", "the JWS payload is not JSON") from None
        if not isinstance(value, dict):
            raise AcmeProblem("malformed", "the JWS payload must be a JSON object")
        return value

    @property
    def post_as_get(self) -> bool:
        return self.payload == b""


def thumbprint(key: jose.JWK) -> str:
    """The RFC 7638 SHA-256 thumbprint of a key, hex."""
    return key.thumbprint(hash_function=hashes.SHA256).hex()


def key_json(key: jose.JWK) -> dict[str, Any]:
    document: dict[str, Any] = key.public_key().to_json()
    return document


def key_from_json(document: Any) -> jose.JWK:
    """A public JWK from its JSON (as stored, or as a client sent it).

    :raises AcmeProblem: badPublicKey when it is not a key certlocker accepts."""
    try:
        key = jose.JWK.from_json(document)
    except (jose.DeserializationError, TypeError, ValueError, KeyError):
        key = None
    if not isinstance(key, jose.JWK):
        raise AcmeProblem("badPublicKey", "the JWK does not parse as an RSA or EC public "
                                          "key")
    _check_key(key)
    return key


def verify(body: bytes, url: str, *, by_account: KeyLookup | None,
           nonce_required: bool = True) -> Signed:
    """Verify a request to ``url``. ``by_account`` turns a ``kid`` into the account's
    key (raising ``AcmeProblem`` for an unknown or inactive account); None: the request
    must carry a ``jwk`` (newAccount, revokeCert signed by the certificate's key).

    :raises AcmeProblem: malformed, badSignatureAlgorithm, badPublicKey, unauthorized,
        accountDoesNotExist (from ``by_account``).
    """
    if len(body) > MAX_BODY:
        raise AcmeProblem("malformed", f"the request body is larger than {MAX_BODY} bytes",
                          status=413)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise AcmeProblem("malformed", "the body is not JSON (a flattened JWS)") from None
    if not isinstance(document, dict) or set(document) - {"protected", "payload",
                                                          "signature", "header"}:
        raise AcmeProblem("malformed", "the body must be a flattened JWS JSON object "
                                       "(protected, payload, signature)")
    if not all(isinstance(document.get(k), str) for k in ("protected", "payload",
                                                          "signature")):
        raise AcmeProblem("malformed", "protected, payload and signature must be strings")
    if document.get("header"):
        raise AcmeProblem("malformed", "every header parameter belongs in the protected "
                                       "header")
    try:
        parsed = acme_jws.JWS.from_json(document)
        header = cast(acme_jws.Header, parsed.signature.combined)
    except (jose.DeserializationError, TypeError, ValueError, KeyError) as exc:
        raise AcmeProblem("malformed", f"the JWS does not parse: {str(exc)[:200]}") from None
    alg = header.alg.name if header.alg is not None else None
    if alg not in ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", f"alg {str(alg)[:20]!r} is not accepted",
                          extra={"algorithms": list(ALGORITHMS)})
    if header.url != url:
        raise AcmeProblem("unauthorized", f"the JWS url {str(header.url)[:300]!r} is not "
                                          f"this resource ({url})")
    if (header.jwk is None) == (header.kid is None):
        raise AcmeProblem("malformed", "the protected header needs exactly one of jwk "
                                       "and kid")
    nonce = jose.encode_b64jose(header.nonce) if header.nonce else None
    if nonce_required and nonce is None:
        raise AcmeProblem("badNonce", "the protected header has no nonce")
    if header.kid is not None:
        if by_account is None:
            raise AcmeProblem("malformed", "this resource takes a jwk, not a kid")
        key = by_account(header.kid)
    else:
        if by_account is not None and not _jwk_allowed(url):
            raise AcmeProblem("malformed", "this resource takes the account's kid, not a "
                                           "jwk")
        if header.jwk is None:
            raise AcmeProblem("malformed", "the protected header has no jwk")
        key = header.jwk
        _check_key(key)
    if not _alg_fits(alg, key):
        raise AcmeProblem("unauthorized", f"alg {alg} does not fit the "
                          f"{'account' if header.kid else 'request'}'s key")
    if not _verifies(parsed, key):
        raise AcmeProblem("unauthorized", "the JWS signature does not verify")
    return Signed(parsed.payload, key, header.kid, nonce, url)


def verify_inner(document: Any, url: str) -> Signed:
    """The inner JWS of a key change (RFC 8555 section 7.3.5): a jwk, the same url, no
    nonce needed.

    :raises AcmeProblem: as ``verify``."""
    return verify(json.dumps(document).encode(), url, by_account=None, nonce_required=False)


def _jwk_allowed(url: str) -> bool:
    return url.endswith("/revoke-cert")


def _check_key(key: jose.JWK) -> None:
    if isinstance(key, jose.JWKRSA):
        wrapped: Any = key.key  # josepy's comparable wrapper of a cryptography key
        size = int(wrapped.key_size)
        if size < 2048 or size > 8192:
            raise AcmeProblem("badPublicKey", f"an RSA account key needs 2048 to 8192 bits, "
                                              f"not {size}")
        return
    if isinstance(key, jose.JWKEC) and _curve(key) in CURVES.values():
        return
    raise AcmeProblem("badPublicKey", "only RSA and EC (P-256, P-384, P-521) keys are "
                                      "accepted")


def _alg_fits(alg: str, key: jose.JWK) -> bool:
    if alg.startswith("RS"):
        return isinstance(key, jose.JWKRSA)
    return isinstance(key, jose.JWKEC) and _curve(key) == CURVES[alg]


def _curve(key: jose.JWKEC) -> str:
    wrapped: Any = key.key
    return str(wrapped.curve.name)


def _verifies(parsed: jose.JWS, key: jose.JWK) -> bool:
    try:
        return bool(parsed.verify(key))
    except (jose.Error, ValueError, TypeError):
        return False
