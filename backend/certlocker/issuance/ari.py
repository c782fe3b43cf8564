"""The ACME Renewal Information (RFC 9773) certificate identifier.

Pure (``cryptography`` only, no ``acme``), so the lifecycle layer can name the
certificate an issuance replaces without importing the ACME library.
"""

from __future__ import annotations

import base64

from cryptography import x509


def ari_id(key_identifier: bytes, serial: int) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER
    content octets), both unpadded. The serial is the DER INTEGER's content: big-endian
    two's complement, so a leading 0x00 is kept when the high bit is set."""
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64(key_identifier)}.{_b64(serial_bytes)}"


def cert_id(certificate_pem: str) -> str | None:
    """The ARI identifier of a PEM certificate; None when it cannot have one (no
    Authority Key Identifier with a keyIdentifier, or not a certificate)."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    if aki.key_identifier is None:
        return None
    return ari_id(aki.key_identifier, cert.serial_number)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
