"""Render one issued certificate into the files and blobs servers consume.

Pure functions: no I/O, no Flask, hvac, acme or jwt. Every renderer first re-parses the
PEM it is given and refuses a private key that does not belong to the leaf, because a
mismatched pair is the failure servers report worst (nginx accepts an EC certificate
with an RSA key at ``nginx -t`` and then fails every handshake).

Renderers take anything with ``certificate``, ``chain`` and ``private_key`` PEM
attributes: a :class:`Bundle` or a :class:`certlocker.models.IssuedCertificate`. Errors
are :class:`certlocker.errors.InvalidInput`; no message ever contains key material or a
password.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from typing import Callable, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12 as _p12

from ..errors import InvalidInput

MIN_PKCS12_PASSWORD = 12
MAX_PKCS12_PASSWORD = 1024
# PBKDF2 iterations for the modern profile; OpenSSL 3 and Windows default to 2048, Java
# 17+ to 10000. More is slower to brute-force and still imports everywhere.
PKCS12_KDF_ROUNDS = 50_000

_K8S_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
_K8S_NAMESPACE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

_KeyTypes = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
             ed448.Ed448PrivateKey, dsa.DSAPrivateKey)


class PemBundle(Protocol):
    """What a renderer needs: ``IssuedCertificate`` and ``Bundle`` both qualify."""

    @property
    def certificate(self) -> str: ...

    @property
    def chain(self) -> str: ...

    @property
    def private_key(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A leaf, its intermediates and its key, all PEM (``chain`` may be empty)."""

    certificate: str
    chain: str
    private_key: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class _Parsed:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: _p12.PKCS12PrivateKeyTypes = dataclasses.field(repr=False)

    def leaf_pem(self) -> str:
        return self.leaf.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def chain_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii")
                       for c in self.chain)

    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode("ascii")


# --- parsing and the key/certificate check --------------------------------------------


def _load_certs(field: str, pem: str, *, allow_empty: bool) -> list[x509.Certificate]:
    if not isinstance(pem, str):
        raise InvalidInput(field, "must be a PEM string")
    if not pem.strip():
        if allow_empty:
            return []
        raise InvalidInput(field, "must not be empty")
    try:
        return x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidInput(field, "is not a PEM certificate") from None


def _load_key(field: str, pem: str) -> _p12.PKCS12PrivateKeyTypes:
    if not isinstance(pem, str) or not pem.strip():
        raise InvalidInput(field, "must be a non-empty PEM string")
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        # from None: the parser's message may quote the input.
        raise InvalidInput(field, "is not an unencrypted PEM private key") from None
    if not isinstance(key, _KeyTypes):
        raise InvalidInput(field, "has an unsupported key type")
    return key


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_certificate(cert_pem: str, key_pem: str) -> bool:
    """True when ``key_pem`` is the private half of the first certificate in ``cert_pem``.

    :raises InvalidInput: when either input does not parse.
    """
    leaf = _load_certs("certificate", cert_pem, allow_empty=False)[0]
    key = _load_key("private_key", key_pem)
    return _spki(leaf.public_key()) == _spki(key.public_key())


def _parse(bundle: PemBundle) -> _Parsed:
    certs = _load_certs("certificate", bundle.certificate, allow_empty=False)
    if len(certs) != 1:
        raise InvalidInput("certificate", "must hold exactly the leaf certificate")
    chain = _load_certs("chain", bundle.chain, allow_empty=True)
    key = _load_key("private_key", bundle.private_key)
    if _spki(certs[0].public_key()) != _spki(key.public_key()):
        raise InvalidInput("private_key", "does not match the certificate's public key")
    return _Parsed(certs[0], tuple(chain), key)


# --- text formats ---------------------------------------------------------------------


def haproxy_pem(bundle: PemBundle) -> str:
    """One file for HAProxy's ``crt``: leaf, intermediates, then the key.

    HAProxy requires the leaf to be the first certificate in the file and finds the key
    wherever it is; leaf-chain-key is the order its documentation shows and the one
    ``templates/haproxy.pem.ctmpl`` renders, so both produce identical bytes.

    :raises InvalidInput: unparseable PEM or a key that does not match.
    """
    p = _parse(bundle)
    return p.leaf_pem() + p.chain_pem() + p.key_pem()


def combined_pem(bundle: PemBundle) -> str:
    """Leaf, chain and key in one file: what HAProxy and nginx both read (see nginx_files)."""
    return haproxy_pem(bundle)


def nginx_files(bundle: PemBundle) -> dict[str, str]:
    """``fullchain.pem`` (for ``ssl_certificate``) and ``privkey.pem`` (``ssl_certificate_key``).

    For agent delivery prefer :func:`combined_pem` in one file that both directives
    name: one atomic write, so nginx can never load a new certificate with an old key.

    :raises InvalidInput: unparseable PEM or a key that does not match.
    """
    p = _parse(bundle)
    return {"fullchain.pem": p.leaf_pem() + p.chain_pem(), "privkey.pem": p.key_pem()}


def pem_trio(bundle: PemBundle) -> dict[str, str]:
    """``cert.pem`` (leaf), ``chain.pem`` (intermediates) and ``key.pem``.

    :raises InvalidInput: unparseable PEM or a key that does not match.
    """
    p = _parse(bundle)
    return {"cert.pem": p.leaf_pem(), "chain.pem": p.chain_pem(), "key.pem": p.key_pem()}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("ascii")).decode("ascii")


def kubernetes_tls_secret(bundle: PemBundle, name: str, namespace: str) -> str:
    """A ``kubernetes.io/tls`` Secret manifest (YAML) for ``kubectl apply -f``.

    ``tls.crt`` is the full chain (what ingress controllers serve), ``tls.key`` the
    PKCS#8 key, ``ca.crt`` the intermediates, present only when there are any.

    :raises InvalidInput: a name or namespace Kubernetes would reject, bad PEM, or a
        key that does not match.
    """
    if not isinstance(name, str) or not _K8S_NAME.match(name):
        raise InvalidInput("name", "must be a DNS-1123 subdomain (lowercase, digits, '-', '.')")
    if not isinstance(namespace, str) or not _K8S_NAMESPACE.match(namespace):
        raise InvalidInput("namespace", "must be a DNS-1123 label (lowercase, digits, '-')")
    p = _parse(bundle)
    lines = [
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
        "  labels:",
        "    app.kubernetes.io/managed-by: certlocker",
        "type: kubernetes.io/tls",
        "data:",
        f"  tls.crt: {_b64(p.leaf_pem() + p.chain_pem())}",
        f"  tls.key: {_b64(p.key_pem())}",
    ]
    if p.chain:
        lines.append(f"  ca.crt: {_b64(p.chain_pem())}")
    return "\n".join(lines) + "\n"


# --- binary formats -------------------------------------------------------------------


def der(bundle: PemBundle) -> bytes:
    """The leaf certificate in DER (no key, no chain).

    :raises InvalidInput: unparseable PEM or a key that does not match.
    """
    return _parse(bundle).leaf.public_bytes(serialization.Encoding.DER)


def validate_pkcs12_password(password: object) -> str:
    """Return ``password`` if it may protect a PKCS#12 file.

    PKCS#12 encryption is only as strong as its password and the file leaves Vault's
    protection, so short passwords are refused rather than warned about.

    :raises InvalidInput: field ``password``; the reason never repeats the password.
    """
    if not isinstance(password, str):
        raise InvalidInput("password", "must be a string")
    if not password:
        raise InvalidInput("password", "must not be empty")
    if len(password) < MIN_PKCS12_PASSWORD:
        raise InvalidInput("password", f"must be at least {MIN_PKCS12_PASSWORD} characters")
    if len(password) > MAX_PKCS12_PASSWORD:
        raise InvalidInput("password", f"must be at most {MAX_PKCS12_PASSWORD} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in password):
        raise InvalidInput("password", "must not contain control characters")
    return password


def _friendly(field: str, value: str) -> bytes:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInput(field, "must be a non-empty string of at most 200 characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidInput(field, "must not contain control characters")
    return value.encode("utf-8")


def pkcs12(bundle: PemBundle, password: str, *, legacy: bool = False,
           friendly_name: str = "certlocker") -> bytes:
    """A password-protected PKCS#12 (``.pfx``) with key, leaf and intermediates.

    Modern (default): PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, HMAC-SHA256 MAC;
    imports on Windows 10 1709+ / Server 2019+, OpenSSL 1.1+, Java 11.0.12+/17.
    ``legacy=True``: pbeWithSHAAnd3-KeyTripleDES-CBC and a SHA-1 MAC, only for older
    Windows and appliances that reject PBES2; weak, use a long password.

    :raises InvalidInput: a refused password or friendly name, unparseable PEM, or a
        key that does not match.
    """
    validate_pkcs12_password(password)
    name = _friendly("friendly_name", friendly_name)
    p = _parse(bundle)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = (builder.kdf_rounds(2048)
                   .key_cert_algorithm(_p12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                   .hmac_hash(hashes.SHA1()))
    else:
        builder = (builder.kdf_rounds(PKCS12_KDF_ROUNDS)
                   .key_cert_algorithm(_p12.PBES.PBESv2SHA256AndAES256CBC)
                   .hmac_hash(hashes.SHA256()))
    return _p12.serialize_key_and_certificates(
        name, p.key, p.leaf, list(p.chain) or None,
        builder.build(password.encode("utf-8")))


def java_pkcs12(bundle: PemBundle, password: str, alias: str) -> bytes:
    """A PKCS#12 keystore for Java (``keytool -list -storetype PKCS12``).

    Java 9+ uses PKCS#12 as its default keystore type; the entry's alias is the
    friendly name. Java lowercases aliases on load, so ``alias`` must be lowercase to
    round-trip unchanged. Modern encryption (see :func:`pkcs12`).

    :raises InvalidInput: as :func:`pkcs12`, or an alias with uppercase letters.
    """
    _friendly("alias", alias)
    if alias != alias.lower():
        raise InvalidInput("alias", "must be lowercase (Java lowercases keystore aliases)")
    return pkcs12(bundle, password, friendly_name=alias)


# --- registry for ?format= ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FormatSpec:
    """How the API offers one format: its media type and what the caller must supply."""

    name: str
    media_type: str
    filename: str
    description: str
    binary: bool = False
    multi_file: bool = False  # the renderer returns {filename: content}
    needs_password: bool = False
    needs_k8s_name: bool = False
    render: Callable[..., object] = dataclasses.field(repr=False, compare=False,
                                                      default=haproxy_pem)


def _pkcs12_legacy(bundle: PemBundle, password: str, *, friendly_name: str = "certlocker",
                   ) -> bytes:
    return pkcs12(bundle, password, legacy=True, friendly_name=friendly_name)


FORMATS: dict[str, FormatSpec] = {s.name: s for s in (
    FormatSpec("haproxy", "application/x-pem-file", "haproxy.pem",
               "leaf, intermediates and key in one file (HAProxy crt, nginx)",
               render=haproxy_pem),
    FormatSpec("nginx", "application/json", "nginx.json",
               "fullchain.pem and privkey.pem", multi_file=True, render=nginx_files),
    FormatSpec("pem", "application/json", "pem.json",
               "cert.pem, chain.pem and key.pem", multi_file=True, render=pem_trio),
    FormatSpec("kubernetes", "application/yaml", "secret.yaml",
               "kubernetes.io/tls Secret manifest", needs_k8s_name=True,
               render=kubernetes_tls_secret),
    FormatSpec("der", "application/pkix-cert", "cert.der",
               "leaf certificate in DER, no key", binary=True, render=der),
    FormatSpec("pkcs12", "application/x-pkcs12", "cert.p12",
               "PKCS#12, AES-256-CBC/PBKDF2-SHA256, HMAC-SHA256", binary=True,
               needs_password=True, render=pkcs12),
    FormatSpec("pkcs12-legacy", "application/x-pkcs12", "cert.pfx",
               "PKCS#12, 3DES/SHA-1 for old Windows", binary=True,
               needs_password=True, render=_pkcs12_legacy),
    FormatSpec("java", "application/x-pkcs12", "keystore.p12",
               "PKCS#12 keystore for keytool; alias required", binary=True,
               needs_password=True, render=java_pkcs12),
)}


def format_spec(name: object) -> FormatSpec:
    """The registered format called ``name``.

    :raises InvalidInput: field ``format``, listing the known names.
    """
    spec = FORMATS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidInput("format", "must be one of: " + ", ".join(sorted(FORMATS)))
    return spec
