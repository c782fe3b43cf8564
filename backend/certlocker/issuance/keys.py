"""Private keys and CSRs, generated in-process (never written to local disk)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from ..errors import IssuanceFailed
from ..models import IssuedCertificate, KeyType
from ..x509info import info_from_pem, public_key_der, read_csr, split_pem_chain

PrivateKey = CertificateIssuerPrivateKeyTypes


def generate(key_type: KeyType) -> PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = {KeyType.RSA_2048: 2048, KeyType.RSA_3072: 3072, KeyType.RSA_4096: 4096}[key_type]
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def to_pem(key: PrivateKey) -> str:
    """PKCS#8 PEM, unencrypted: it is only ever stored inside Vault."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def from_pem(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
    return key


def csr_pem(key: PrivateKey, dns_names: tuple[str, ...]) -> bytes:
    """A CSR whose SANs are exactly ``dns_names``; the CN is the first name when it fits
    (64 octets, RFC 5280 ub-common-name) — CAs ignore it for validation anyway."""
    builder = x509.CertificateSigningRequestBuilder()
    if len(dns_names[0]) <= 64:
        builder = builder.subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def public_key_matches(key: PrivateKey, cert_pem: str) -> bool:
    return _spki(key) == public_key_der(cert_pem)


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def bundle(fullchain: str, key: PrivateKey | None = None,
           csr_pem: str | None = None) -> IssuedCertificate:
    """The CA's full chain as the bundle stored for the certificate, checked to be for
    ``key`` (certlocker's) or for the key of ``csr_pem`` (the client's, which stays with
    the client: the bundle then has no private key).

    :raises IssuanceFailed: no certificate, or one for another key (not retryable)."""
    certs = split_pem_chain(fullchain)
    if not certs:
        raise IssuanceFailed("the CA returned no certificate")
    leaf, chain = certs[0], "".join(certs[1:])
    if key is not None:
        ours = _spki(key)
    else:
        assert csr_pem is not None
        ours = read_csr(csr_pem).public_key_der
    if public_key_der(leaf) != ours:
        raise IssuanceFailed("the CA returned a certificate for another key"
                             + ("" if key is not None else " than the CSR's"), retryable=False)
    return IssuedCertificate(info=info_from_pem(leaf), certificate=leaf, chain=chain,
                             private_key=to_pem(key) if key is not None else "")
