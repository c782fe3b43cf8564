"""Reading public facts out of certificates (pure; uses cryptography only)."""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .models import CertificateInfo

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
