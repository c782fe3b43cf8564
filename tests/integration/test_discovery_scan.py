"""Endpoint discovery against real nginx TLS listeners on loopback.

One nginx serves three "managed" certificates (in the inventory) and two "shadow"
certificates (not in it) on a block of consecutive ports, plus one plain-HTTP port; the
scan of the port range must return exactly the shadow certificates as unmanaged and flag
the one that expires in ten days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certlocker.discovery.files import FoundCertificate
from certlocker.discovery.scan import ScanError, expand_targets, match_inventory, \
    scan_endpoints
from tests.support.pools import threads

#: the handshakes' executor (certlocker's composition root makes its own)
PROBES = threads(64, "verify")

pytestmark = pytest.mark.integration

NGINX = "/usr/sbin/nginx"


# --- helpers: certificates, free ports, an nginx started and stopped by PID ----------


def write_cert(directory: pathlib.Path, name: str, days: int) -> str:
    """Write ``<name>.crt`` and ``<name>.key`` (the server's own key, in the test's tmp
    dir) and return the certificate's SHA-256 fingerprint."""
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
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert.fingerprint(hashes.SHA256()).hex()


def free_port_block(count: int, attempts: int = 200) -> int:
    """First port of ``count`` consecutive ports that are free on 127.0.0.1 right now."""
    for _ in range(attempts):
        base = random.randint(20000, 60000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {count} free ports found")


@dataclasses.dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    error_log: pathlib.Path


def start_nginx(directory: pathlib.Path, servers: str, ports: list[int]) -> Nginx:
    """Run ``nginx -g 'daemon off;'`` on a config holding ``servers`` and wait until every
    port accepts connections. Stop it with :func:`stop_nginx` (by PID)."""
    conf = directory / "nginx.conf"
    error_log = directory / "error.log"
    temp = directory / "temp"
    temp.mkdir(exist_ok=True)
    conf.write_text(f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{servers}
}}
""")
    process = subprocess.Popen(
        [NGINX, "-p", str(directory), "-e", str(error_log), "-c", str(conf),
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Nginx(process, error_log)
    deadline = time.monotonic() + 15
    pending = set(ports)
    while pending:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"nginx exited with {process.returncode}: {err}"
                               f"{error_log.read_text() if error_log.exists() else ''}")
        if time.monotonic() > deadline:
            stop_nginx(server)
            raise RuntimeError(f"nginx did not listen on {sorted(pending)}")
        for port in list(pending):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                pending.discard(port)
            except OSError:
                pass
        time.sleep(0.05)
    return server


def stop_nginx(server: Nginx) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # SIGTERM to this master PID only: fast shutdown
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
    if server.process.stderr:
        server.process.stderr.close()


def tls_server(port: int, directory: pathlib.Path, name: str,
               server_name: str | None = None, default: bool = False) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl{' default_server' if default else ''};
        server_name {server_name or '_'};
        ssl_certificate {directory}/{name}.crt;
        ssl_certificate_key {directory}/{name}.key;
        return 200 "ok\\n";
    }}"""


# --- the fleet -----------------------------------------------------------------------


@dataclasses.dataclass
class Fleet:
    base: int  # ports base .. base+5 are the scanned range; base+6 has two SNI names
    managed: dict[str, str]  # fingerprint -> certificate id
    shadow: dict[str, str]  # name -> fingerprint
    fingerprints: dict[str, str]  # name -> fingerprint


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("nginx-discovery")
    lifetimes = {"managed-a": 80, "managed-b": 200, "managed-c": 12,
                 "shadow-old": 300, "shadow-expiring": 10}
    fps = {name: write_cert(directory, f"{name}.example.test", days)
           for name, days in lifetimes.items()}
    base = free_port_block(7)
    order = ["managed-a", "shadow-old", "managed-b", "shadow-expiring", "managed-c"]
    servers = "".join(tls_server(base + i, directory, f"{name}.example.test")
                      for i, name in enumerate(order))
    servers += f"""
    server {{
        listen 127.0.0.1:{base + 5};
        return 200 "plain http\\n";
    }}"""
    servers += tls_server(base + 6, directory, "managed-a.example.test", default=True)
    servers += tls_server(base + 6, directory, "managed-b.example.test",
                          server_name="managed-b.example.test")
    nginx = start_nginx(directory, servers, [base + i for i in range(7)])
    try:
        yield Fleet(
            base=base,
            managed={fps[n]: f"prod.web.{n}" for n in ("managed-a", "managed-b", "managed-c")},
            shadow={n: fps[n] for n in ("shadow-old", "shadow-expiring")},
            fingerprints=fps)
    finally:
        stop_nginx(nginx)


def test_port_range_scan_finds_exactly_the_shadow_certificates(fleet: Fleet) -> None:
    endpoints = expand_targets([f"127.0.0.1:{fleet.base}-{fleet.base + 5}"])
    assert len(endpoints) == 6
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def progress(done: int, total: int) -> None:
        with lock:
            calls.append((done, total))

    results = scan_endpoints(endpoints, timeout=5, parallelism=3, progress=progress, pool=PROBES)

    assert len(results) == 6
    assert sorted(calls) == [(i, 6) for i in range(1, 7)]
    found = [r for r in results if isinstance(r, FoundCertificate)]
    errors = [r for r in results if isinstance(r, ScanError)]
    assert len(found) == 5
    assert [(e.port, e.reason) for e in errors] == [(fleet.base + 5, "tls-error")]
    assert results[0].source == f"tls:127.0.0.1:{fleet.base}"  # input order kept

    classified = match_inventory(results, fleet.managed)
    unmanaged = {c.found.sha256_fingerprint for c in classified if not c.managed}
    assert unmanaged == set(fleet.shadow.values())
    managed_ids = {c.certificate_id for c in classified if c.managed}
    assert managed_ids == {"prod.web.managed-a", "prod.web.managed-b", "prod.web.managed-c"}

    soon = {c.found.sha256_fingerprint for c in classified
            if not c.managed and c.expiring_soon}
    assert soon == {fleet.shadow["shadow-expiring"]}
    expiring_managed = {c.certificate_id for c in classified if c.managed and c.expiring_soon}
    assert expiring_managed == {"prod.web.managed-c"}

    by_fp = {f.sha256_fingerprint: f for f in found}
    shadow = by_fp[fleet.shadow["shadow-old"]]
    assert shadow.dns_names == ("shadow-old.example.test",)
    assert shadow.subject == "CN=shadow-old.example.test"
    assert shadow.source == f"tls:127.0.0.1:{fleet.base + 1}"


def test_sni_selects_the_served_certificate(fleet: Fleet) -> None:
    port = fleet.base + 6
    plain, named = scan_endpoints([("127.0.0.1", port)] * 2, timeout=5, parallelism=2, pool=PROBES)
    assert isinstance(plain, FoundCertificate) and isinstance(named, FoundCertificate)
    assert plain.sha256_fingerprint == fleet.fingerprints["managed-a"]
    [with_sni] = scan_endpoints([("127.0.0.1", port)], timeout=5,
                                sni="managed-b.example.test", pool=PROBES)
    assert isinstance(with_sni, FoundCertificate)
    assert with_sni.sha256_fingerprint == fleet.fingerprints["managed-b"]


def test_closed_port_is_reported_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [result] = scan_endpoints([("127.0.0.1", port)], timeout=2, pool=PROBES)
    assert isinstance(result, ScanError) and result.reason == "refused"


def test_silent_listener_times_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        start = time.monotonic()
        [result] = scan_endpoints([("127.0.0.1", port)], timeout=0.5, pool=PROBES)
        assert time.monotonic() - start < 5
    assert isinstance(result, ScanError) and result.reason == "timeout"
