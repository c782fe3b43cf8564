"""Reading public facts out of certificates (pure; uses cryptography only)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .models import CertificateInfo, KeyType

PEM_CERT_END = "-----END CERTIFICATE-----"


def split_pem_chain(pem: str) -> list[str]:
    """Split concatenated PEM certificates, each returned with one trailing newline."""
    parts = []
    for block in pem.split(PEM_CERT_END):
        block = block.strip()
        if block:
            parts.append(block + "\n" + PEM_CERT_END + "\n")
    return parts


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def dns_names_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.DNSName))


def first_fingerprint(chain_pem: str) -> str | None:
    """SHA-256 (hex) of the first certificate of a PEM chain (the issuing
    intermediate); None when the chain is empty or does not parse."""
    parts = split_pem_chain(chain_pem or "")
    if not parts:
        return None
    try:
        return fingerprint(x509.load_pem_x509_certificate(parts[0].encode()))
    except ValueError:
        return None


def info_from_pem(leaf_pem: str) -> CertificateInfo:
    cert = x509.load_pem_x509_certificate(leaf_pem.encode())
    return CertificateInfo(
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc.astimezone(dt.timezone.utc),
        not_after=cert.not_valid_after_utc.astimezone(dt.timezone.utc),
        sha256_fingerprint=fingerprint(cert),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=dns_names_of(cert),
    )


@dataclasses.dataclass(frozen=True)
class CsrFacts:
    """What certlocker needs of a client's CSR: its names, its key's type (a ``KeyType``
    value) and its public key (DER SubjectPublicKeyInfo)."""

    dns_names: tuple[str, ...]
    key_type: KeyType
    public_key_der: bytes = dataclasses.field(repr=False)
    common_name: str | None = None


MAX_CSR_BYTES = 16 * 1024


def read_csr(data: str | bytes) -> CsrFacts:
    """Check a CSR (PEM, or DER bytes) a client sent: well formed, self-signed by its key,
    only DNS names (a common name, if any, among them), and a key type certlocker issues
    for (EC P-256/P-384, RSA 2048/3072/4096).

    :raises ValueError: saying what is wrong, in words fit for the client.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_CSR_BYTES:
        raise ValueError("the CSR is larger than 16 KiB")
    try:
        csr = (x509.load_pem_x509_csr(raw) if raw.lstrip().startswith(b"-----")
               else x509.load_der_x509_csr(raw))
    except ValueError:
        raise ValueError("the CSR does not parse as PKCS#10") from None
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not verify with its own key")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("the CSR names no DNS names (subjectAltName)") from None
    except (ValueError, x509.DuplicateExtension):
        raise ValueError("the CSR's extensions do not parse") from None
    names = tuple(str(n).lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName))
    if len(names) != len(list(san)):
        raise ValueError("the CSR may name only DNS names (no IP addresses, e-mail "
                         "addresses or URIs)")
    if not names:
        raise ValueError("the CSR names no DNS names (subjectAltName)")
    common_name = None
    for attribute in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else ""
        if value.lower().rstrip(".") not in names:
            raise ValueError(f"the CSR's common name {value[:64]!r} is not among its DNS "
                             "names")
        common_name = value
    return CsrFacts(names, _key_type(csr.public_key()), csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        common_name)


def _key_type(key: object) -> KeyType:
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}.get(
            key.curve.name)
        if curve is not None:
            return curve
        raise ValueError(f"the CSR's key is on curve {key.curve.name}; use P-256 or P-384")
    if isinstance(key, rsa.RSAPublicKey):
        size = {2048: KeyType.RSA_2048, 3072: KeyType.RSA_3072,
                4096: KeyType.RSA_4096}.get(key.key_size)
        if size is not None:
            return size
        raise ValueError(f"the CSR's RSA key has {key.key_size} bits; use 2048, 3072 or "
                         "4096")
    raise ValueError("the CSR's key is neither EC (P-256, P-384) nor RSA")


def public_key_der(cert_pem: str) -> bytes:
    """The certificate's public key (DER SubjectPublicKeyInfo)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
