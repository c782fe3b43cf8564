"""Choosing the preferred chain among the CA's alternates (pure)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certlocker.issuance.chains import select

NOW = dt.datetime.now(dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
          signer: ec.EllipticCurvePrivateKey) -> str:
    cert = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _chain(intermediate: str, root: str) -> str:
    leaf_key, int_key, root_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    return (_cert("leaf.test", intermediate, leaf_key, int_key)
            + _cert(intermediate, root, int_key, root_key))


DEFAULT = _chain("Int A", "Root One")
ALTERNATE = _chain("Int B", "Root Two")


def test_without_a_preference_the_default_chain_is_kept():
    assert select([DEFAULT, ALTERNATE], None) == DEFAULT


def test_the_topmost_issuer_name_picks_the_alternate():
    assert select([DEFAULT, ALTERNATE], "Root Two") == ALTERNATE


def test_an_intermediate_subject_name_also_matches():
    assert select([DEFAULT, ALTERNATE], "Int B") == ALTERNATE


def test_no_match_falls_back_to_the_default():
    assert select([DEFAULT, ALTERNATE], "Root Three") == DEFAULT
