"""Discovery without a network: certificate files on disk, target expansion, matching."""

from __future__ import annotations

import datetime as dt
import os
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from certlocker.discovery.files import FoundCertificate, scan_files
from certlocker.discovery.scan import ScanError, expand_targets, match_inventory
from certlocker.errors import InvalidInput

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def make_cert(cn: str, *, days: int = 90, ca: bool = False,
              serial: int | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture()
def tree(tmp_path: pathlib.Path) -> dict:
    root = tmp_path / "root"
    (root / "nginx").mkdir(parents=True)
    (root / "java").mkdir()
    leaf, leaf_key = make_cert("www.example.test", serial=0xABCDEF)
    ca, _ = make_cert("Example Test CA", ca=True, days=3650)
    (root / "nginx" / "bundle.pem").write_bytes(pem(leaf) + key_pem(leaf_key) + pem(ca))
    der, _ = make_cert("der.example.test")
    (root / "java" / "server.der").write_bytes(der.public_bytes(serialization.Encoding.DER))
    open_p12, open_key = make_cert("open.example.test")
    (root / "java" / "open.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"open", open_key, open_p12, None, serialization.NoEncryption()))
    pw_p12, pw_key = make_cert("pw.example.test")
    (root / "java" / "pw.pfx").write_bytes(pkcs12.serialize_key_and_certificates(
        b"pw", pw_key, pw_p12, None, serialization.BestAvailableEncryption(b"changeit")))
    (root / "README.txt").write_text("not a certificate\n")
    (root / "nginx" / "junk.crt").write_bytes(b"\x30\x82garbage")
    outside, _ = make_cert("outside.example.test")
    (tmp_path / "outside.pem").write_bytes(pem(outside))
    os.symlink(tmp_path / "outside.pem", root / "nginx" / "escape.pem")
    os.symlink(root / "nginx" / "bundle.pem", root / "java" / "same-bundle.pem")
    os.symlink(tmp_path, root / "dirlink")
    return {"root": root, "leaf": leaf, "leaf_key": leaf_key, "ca": ca, "der": der,
            "open": open_p12, "pw": pw_p12, "outside": outside, "tmp": tmp_path}


def test_finds_pem_der_and_open_pkcs12_but_not_keys(tree: dict) -> None:
    root = tree["root"]
    result = scan_files(root)
    by_fp = {f.sha256_fingerprint: f for f in result.found}
    assert set(by_fp) == {fp(tree["leaf"]), fp(tree["ca"]), fp(tree["der"]),
                          fp(tree["open"])}
    leaf = by_fp[fp(tree["leaf"])]
    assert leaf.source == f"file:{root}/nginx/bundle.pem"
    assert leaf.serial == "abcdef" and leaf.dns_names == ("www.example.test",)
    assert leaf.subject == "CN=www.example.test" and not leaf.is_ca
    assert leaf.not_after == tree["leaf"].not_valid_after_utc
    assert by_fp[fp(tree["ca"])].is_ca
    assert by_fp[fp(tree["der"])].source == f"file:{root}/java/server.der"
    skipped = {(s.path, s.reason) for s in result.skipped}
    assert (f"{root}/java/pw.pfx", "locked") in skipped
    assert (f"{root}/nginx/escape.pem", "symlink-outside-root") in skipped
    assert (f"{root}/nginx/junk.crt", "unparseable") in skipped
    assert sorted(result.key_files) == [f"{root}/java/open.p12", f"{root}/nginx/bundle.pem"]
    assert not result.truncated
    # The in-root symlink points at a file already read: each file is read once.
    assert len(result.found) == 4


def test_no_key_material_in_any_result(tree: dict) -> None:
    result = scan_files(tree["root"], passwords=["changeit"])
    text = repr(result) + repr([f.to_json() for f in result.found])
    assert "PRIVATE KEY" not in text
    assert "changeit" not in text
    body = b"".join(key_pem(tree["leaf_key"]).splitlines()[1:-1]).decode()
    assert body[:40] not in text


def test_configured_password_opens_locked_pkcs12(tree: dict) -> None:
    result = scan_files(tree["root"], passwords=["wrong", "changeit"])
    assert fp(tree["pw"]) in {f.sha256_fingerprint for f in result.found}
    assert all(s.reason != "locked" for s in result.skipped)


def test_symlinks_out_of_root_are_never_followed(tree: dict) -> None:
    result = scan_files(tree["root"])
    sources = {f.source for f in result.found}
    assert fp(tree["outside"]) not in {f.sha256_fingerprint for f in result.found}
    assert not any("dirlink" in s for s in sources)


def test_max_file_size_and_max_files(tree: dict) -> None:
    small = scan_files(tree["root"], max_file_size=64)
    assert small.found == ()
    assert {s.reason for s in small.skipped} >= {"too-large"}
    capped = scan_files(tree["root"], max_files=2)
    assert capped.truncated and capped.files_scanned == 2


def test_single_file_root(tree: dict) -> None:
    result = scan_files(tree["root"] / "nginx" / "bundle.pem")
    assert {f.sha256_fingerprint for f in result.found} == {fp(tree["leaf"]), fp(tree["ca"])}


# --- expand_targets -------------------------------------------------------------------


def test_expand_host_port_ranges_and_cidr() -> None:
    assert expand_targets(["10.0.0.0/30:443", "Web.Example.test:8443-8444",
                           "[::1]:443", "10.0.0.1:443"]) == [
        ("10.0.0.1", 443), ("10.0.0.2", 443), ("web.example.test", 8443),
        ("web.example.test", 8444), ("::1", 443)]
    assert expand_targets(["[2001:db8::/126]:443,8443"]) == [
        (f"2001:db8::{i}", p) for i in (1, 2, 3) for p in (443, 8443)]


def test_cidr_cap() -> None:
    assert len(expand_targets(["10.0.0.0/20:443"])) == 4094
    with pytest.raises(InvalidInput) as info:
        expand_targets(["10.0.0.0/8:443"])
    assert info.value.field == "/targets/0"
    with pytest.raises(InvalidInput):
        expand_targets(["[2001:db8::/64]:443"])
    with pytest.raises(InvalidInput):
        expand_targets(["10.0.0.0/20:443", "10.1.0.0/24:443"])
    with pytest.raises(InvalidInput):
        expand_targets(["10.0.0.0/24:1-100"])


@pytest.mark.parametrize("bad", [
    "", "example.test", "example.test:", "example.test:0", "example.test:65536",
    "example.test:http", "example.test:10-5", "10.0.0.0/33:443", "::1:443",
    "[::1]443", "[10.0.0.1]:443", "exa mple.test:443", "*.example.test:443", ":443",
])
def test_bad_targets_are_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput):
        expand_targets(["ok.example.test:443", bad])


# --- match_inventory ------------------------------------------------------------------


def _found(fingerprint: str, days: int) -> FoundCertificate:
    return FoundCertificate(fingerprint, "CN=x", ("x",), "CN=x", "1",
                            NOW - dt.timedelta(days=10), NOW + dt.timedelta(days=days),
                            "tls:10.0.0.1:443", False)


def test_match_inventory_managed_unmanaged_and_expiry() -> None:
    found = [_found("AA" * 32, 60), _found("bb" * 32, 10), ScanError("h", 1, "refused"),
             _found("cc" * 32, -1)]
    known = {":".join(["aa"] * 32): "prod.api.www"}
    out = match_inventory(found, known, now=NOW)
    assert [(c.managed, c.certificate_id, c.expiring_soon, c.expired) for c in out] == [
        (True, "prod.api.www", False, False), (False, None, True, False),
        (False, None, True, True)]
    wider = match_inventory(found, known, now=NOW, expiring_within=dt.timedelta(days=90))
    assert all(c.expiring_soon for c in wider)
