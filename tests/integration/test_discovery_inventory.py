"""Discovery wired to the inventory, on the real stack and a real nginx on loopback.

nginx serves a certificate certlocker issued (deployed from Vault as a Vault Agent would)
and two shadow certificates, one expiring in five days, on consecutive ports next to a
plain-HTTP port. A port-range scan through the API must record exactly the shadow
certificates as unmanaged (with where they were found) and recognise the issued one as
managed; a directory scan by the CLI reports PEM, DER and PKCS#12 shadows the same way;
adopting a shadow declares a spec with its DNS names, which then gets issued.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.integration.test_discovery_scan import (free_port_block, start_nginx, stop_nginx,
                                                   tls_server, write_cert)

pytestmark = pytest.mark.integration

CERTLOCKER = str(pathlib.Path(sys.executable).with_name("certlocker"))


def api(stack: Any, method: str, path: str, token: str | None = None,
        **kwargs: Any) -> requests.Response:
    return requests.request(method, stack.api_url + path, timeout=120,
                            headers={"X-Vault-Token": token or stack.operator_token},
                            **kwargs)


def cli(stack: Any, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(stack.env)
    if token:
        env["VAULT_TOKEN"] = token
    return subprocess.run([CERTLOCKER, "--json", *args], env=env, capture_output=True,
                          text=True, timeout=180)


def self_signed(name: str, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def managed(certlocker_stack: Any) -> dict[str, Any]:
    """A certificate certlocker issued, and its bundle as the service reads it."""
    resp = api(certlocker_stack, "POST", "/v1/certificates?wait=60", json={
        "environment": "prod", "service": "disc-web", "name": "www",
        "dns_names": ["www.disc-web.test"]})
    assert resp.status_code == 201, resp.text
    bundle = certlocker_stack.client(certlocker_stack.root_token).secrets.kv.v2 \
        .read_secret_version(path="certs/prod/disc-web/www", mount_point="certlocker",
                             raise_on_deleted_version=True)["data"]["data"]
    return {"cert": resp.json(), "bundle": bundle}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, managed: dict[str, Any],
          ) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("nginx-shadow")
    (directory / "managed.crt").write_text(managed["bundle"]["fullchain"])
    (directory / "managed.key").write_text(managed["bundle"]["private_key"])
    shadows = {"old": write_cert(directory, "shadow-old.disc.test", 300),
               "expiring": write_cert(directory, "shadow-expiring.disc.test", 5)}
    base = free_port_block(4)
    servers = (tls_server(base, directory, "managed")
               + tls_server(base + 1, directory, "shadow-old.disc.test")
               + tls_server(base + 2, directory, "shadow-expiring.disc.test")
               + f"\n    server {{ listen 127.0.0.1:{base + 3}; return 200 \"plain\\n\"; }}")
    nginx = start_nginx(directory, servers, [base + i for i in range(4)])
    try:
        yield {"base": base, "shadows": shadows}
    finally:
        stop_nginx(nginx)


@pytest.fixture(scope="module")
def scanned(certlocker_stack: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    base = fleet["base"]
    resp = api(certlocker_stack, "POST", "/v1/discovery/scans?wait=90", json={
        "endpoints": [f"127.0.0.1:{base}-{base + 3}"], "timeout": 5, "parallelism": 4})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _mine(stack: Any, fingerprints: set[str], **params: str) -> dict[str, dict[str, Any]]:
    resp = api(stack, "GET", "/v1/discovery", params={"limit": "1000", **params})
    assert resp.status_code == 200, resp.text
    return {d["sha256_fingerprint"]: d for d in resp.json()["items"]
            if d["sha256_fingerprint"] in fingerprints}


def test_a_port_range_scan_records_exactly_the_shadow_certificates(
        certlocker_stack: Any, fleet: dict[str, Any], managed: dict[str, Any],
        scanned: dict[str, Any]) -> None:
    base = fleet["base"]
    assert scanned["state"] == "done" and scanned["done"] == scanned["total"] == 4
    result = scanned["result"]
    assert {u["sha256_fingerprint"] for u in result["unmanaged"]} == set(
        fleet["shadows"].values())
    assert result["managed"] == [{
        "sha256_fingerprint": managed["cert"]["current"]["sha256_fingerprint"],
        "certificate_id": "prod.disc-web.www", "source": f"tls:127.0.0.1:{base}"}]
    assert result["counts"] == {"managed": 1, "retired": 0, "unmanaged": 2,
                                "ca_certificates": 0, "errors": 1}
    assert result["errors"] == {"tls-error": 1}

    listed = _mine(certlocker_stack, set(fleet["shadows"].values()))
    assert set(listed) == set(fleet["shadows"].values())
    old, soon = listed[fleet["shadows"]["old"]], listed[fleet["shadows"]["expiring"]]
    assert [s["source"] for s in old["sources"]] == [f"tls:127.0.0.1:{base + 1}"]
    assert [s["source"] for s in soon["sources"]] == [f"tls:127.0.0.1:{base + 2}"]
    assert (old["expiring_soon"], soon["expiring_soon"]) == (False, True)
    assert soon["state"] == "unmanaged" and soon["owner"] is None
    assert soon["dns_names"] == ["shadow-expiring.disc.test"]
    assert soon["subject"] == "CN=shadow-expiring.disc.test"

    within = _mine(certlocker_stack, set(fleet["shadows"].values()), expiring_within="10d")
    assert set(within) == {fleet["shadows"]["expiring"]}


def test_the_scan_is_audited_and_polling_reads_it_from_any_worker(
        certlocker_stack: Any, scanned: dict[str, Any]) -> None:
    for _ in range(4):  # two gunicorn workers: each must find the document in Vault
        again = api(certlocker_stack, "GET", f"/v1/discovery/scans/{scanned['id']}")
        assert again.status_code == 200 and again.json()["state"] == "done"
    events = api(certlocker_stack, "GET", "/v1/audit",
                 params={"action": "discovery.scan", "limit": "50"}).json()["items"]
    mine = [e for e in events if e["subject"] == f"scan:{scanned['id']}"]
    assert len(mine) == 1 and mine[0]["outcome"] == "success"
    assert mine[0]["details"]["unmanaged"] == 2


def test_the_cli_scans_endpoints_through_the_api(certlocker_stack: Any,
                                                  fleet: dict[str, Any]) -> None:
    base = fleet["base"]
    done = cli(certlocker_stack, "scan", "endpoints", f"127.0.0.1:{base + 1}-{base + 2}",
               "--timeout", "5", "--poll", "0.2")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["state"] == "done"
    assert {u["sha256_fingerprint"] for u in doc["result"]["unmanaged"]} == set(
        fleet["shadows"].values())
    bad = cli(certlocker_stack, "scan", "endpoints", "127.0.0.1:99999")
    assert bad.returncode == 1 and "endpoints/0" in bad.stderr


def test_a_directory_scan_by_the_cli_reports_pem_der_and_pkcs12(
        certlocker_stack: Any, tmp_path: pathlib.Path, managed: dict[str, Any]) -> None:
    pem_cert, pem_key = self_signed("pem-shadow.disc.test", 40)
    der_cert, _ = self_signed("der-shadow.disc.test", 3)
    p12_cert, p12_key = self_signed("p12-shadow.disc.test", 200)
    (tmp_path / "etc" / "ssl").mkdir(parents=True)
    (tmp_path / "etc" / "ssl" / "pem.pem").write_bytes(
        pem_cert.public_bytes(serialization.Encoding.PEM) + pem_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    (tmp_path / "etc" / "der.der").write_bytes(der_cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "app.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"app", p12_key, p12_cert, None, serialization.BestAvailableEncryption(b"s3cret")))
    (tmp_path / "managed.pem").write_text(managed["bundle"]["certificate"])

    done = cli(certlocker_stack, "scan", "dir", str(tmp_path), "--password", "s3cret",
               "--report", "--host", "web-7")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "PRIVATE KEY" not in done.stdout and "s3cret" not in done.stdout
    expected = {fingerprint(c): c for c in (pem_cert, der_cert, p12_cert)}
    assert report["report"]["counts"]["unmanaged"] == 3
    assert [m["certificate_id"] for m in report["report"]["managed"]] == ["prod.disc-web.www"]

    listed = _mine(certlocker_stack, set(expected))
    assert set(listed) == set(expected)
    sources = {fp: [s["source"] for s in d["sources"]] for fp, d in listed.items()}
    assert sources[fingerprint(pem_cert)] == [f"file://web-7{tmp_path}/etc/ssl/pem.pem"]
    assert sources[fingerprint(p12_cert)] == [f"file://web-7{tmp_path}/app.p12"]
    assert listed[fingerprint(der_cert)]["expiring_soon"] is True
    assert listed[fingerprint(pem_cert)]["expiring_soon"] is False


def test_adopting_a_shadow_declares_and_issues_its_names(
        certlocker_stack: Any, fleet: dict[str, Any], scanned: dict[str, Any]) -> None:
    fp = fleet["shadows"]["expiring"]
    resp = api(certlocker_stack, "POST", f"/v1/discovery/{fp}/adopt?wait=60", json={
        "environment": "prod", "service": "disc-adopted", "name": "www", "issuer": "pebble"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    cert = body["certificate"]
    assert cert["id"] == "prod.disc-adopted.www" and cert["status"] == "valid"
    assert cert["dns_names"] == ["shadow-expiring.disc.test"]
    assert cert["current"]["sha256_fingerprint"] != fp
    assert body["discovery"]["state"] == "adopted"
    assert body["discovery"]["adoption"]["certificate_id"] == "prod.disc-adopted.www"

    assert fp not in _mine(certlocker_stack, {fp})
    assert fp in _mine(certlocker_stack, {fp}, state="adopted")
    again = api(certlocker_stack, "POST", f"/v1/discovery/{fp}/adopt", json={
        "environment": "prod", "service": "disc-adopted", "name": "other"})
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"
    events = api(certlocker_stack, "GET", "/v1/audit",
                 params={"action": "discovery.adopt", "certificate": "prod.disc-adopted.www"})
    assert [e["outcome"] for e in events.json()["items"]] == ["success"]


def test_the_cli_adopts_too(certlocker_stack: Any, fleet: dict[str, Any],
                            scanned: dict[str, Any]) -> None:
    done = cli(certlocker_stack, "discovery", "adopt", fleet["shadows"]["old"], "prod",
               "disc-adopted-cli", "www")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["certificate"]["dns_names"] == ["shadow-old.disc.test"]


def test_a_default_openssl_self_signed_certificate_served_is_unmanaged(
        certlocker_stack: Any, tmp_path: pathlib.Path) -> None:
    """The most common shadow certificate: ``openssl req -x509`` with its defaults sets
    CA:TRUE. Served by nginx, it must be recorded as unmanaged, not counted as a CA."""
    name = "openssl-default.disc.test"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", f"/CN={name}",
                    "-keyout", str(tmp_path / f"{name}.key"),
                    "-out", str(tmp_path / f"{name}.crt")],
                   check=True, capture_output=True, timeout=60)
    cert = x509.load_pem_x509_certificate((tmp_path / f"{name}.crt").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    port = free_port_block(1)
    nginx = start_nginx(tmp_path, tls_server(port, tmp_path, name), [port])
    try:
        resp = api(certlocker_stack, "POST", "/v1/discovery/scans?wait=90", json={
            "endpoints": [f"127.0.0.1:{port}"], "timeout": 5})
    finally:
        stop_nginx(nginx)
    assert resp.status_code == 201, resp.text
    result = resp.json()["result"]
    assert [u["sha256_fingerprint"] for u in result["unmanaged"]] == [fingerprint(cert)]
    assert result["counts"]["ca_certificates"] == 0
    listed = _mine(certlocker_stack, {fingerprint(cert)})[fingerprint(cert)]
    assert listed["state"] == "unmanaged" and listed["is_ca"] is True
    assert [s["source"] for s in listed["sources"]] == [f"tls:127.0.0.1:{port}"]


def test_a_team_operator_may_not_scan_and_bad_input_is_a_problem(
        certlocker_stack: Any, fleet: dict[str, Any]) -> None:
    root = certlocker_stack.client(certlocker_stack.root_token)
    team = root.auth.token.create(policies=["certlocker-operator-team-payments"],
                                  ttl="10m")["auth"]["client_token"]
    denied = api(certlocker_stack, "POST", "/v1/discovery/scans", token=team,
                 json={"endpoints": [f"127.0.0.1:{fleet['base']}"]})
    assert denied.status_code == 403
    assert "specs/_system/discovery" in denied.json()["detail"]
    assert api(certlocker_stack, "GET", "/v1/discovery", token=team).status_code == 403
    for body, field in (({"endpoints": ["10.0.0.0/8:443"]}, "endpoints/0"),
                        ({"endpoints": ["a:1"], "timeout": "x"}, "timeout"),
                        ({"endpoints": []}, "endpoints"),
                        ({"endpoints": ["a:1"], "bogus": 1}, "bogus")):
        resp = api(certlocker_stack, "POST", "/v1/discovery/scans", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["field"] == field
    for path in ("/v1/discovery/nothex", "/v1/discovery/" + "a" * 64):
        assert api(certlocker_stack, "GET", path).status_code == 404
