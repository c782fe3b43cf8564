"""A real nginx serving chosen certificates on chosen loopback addresses, and a tiny CA.

``MiniCA`` issues a root, an intermediate and leaves with ``cryptography``. ``NginxPool``
writes one nginx.conf with a server block per (ip, port) site, each with its own cert
and key files in the test's tmp dir, runs ``nginx -g 'daemon off;'`` in the foreground
as a child process, waits until every site accepts connections, and stops it by PID.

Several 127.0.0.x addresses can share one port, which is how a pool of nodes behind
one name is simulated: Linux routes all of 127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclasses.dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")


class MiniCA:
    """A root and one intermediate; ``leaf`` issues from the intermediate."""

    def __init__(self, name: str = "certlocker test") -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.root = self._issue(f"{name} root", None, ca=True,
                                not_before=now - dt.timedelta(days=1),
                                not_after=now + dt.timedelta(days=3650))
        self.intermediate = self._issue(f"{name} intermediate", self.root, ca=True,
                                        not_before=now - dt.timedelta(days=1),
                                        not_after=now + dt.timedelta(days=1825))

    def leaf(self, dns_names: list[str], *, not_before: dt.datetime | None = None,
             not_after: dt.datetime | None = None) -> Issued:
        now = dt.datetime.now(dt.timezone.utc)
        return self._issue(dns_names[0], self.intermediate, ca=False, dns_names=dns_names,
                           not_before=not_before or now - dt.timedelta(hours=1),
                           not_after=not_after or now + dt.timedelta(days=90))

    def fullchain(self, leaf: Issued) -> bytes:
        return leaf.pem + self.intermediate.pem

    @staticmethod
    def _issue(common_name: str, issuer: Issued | None, *, ca: bool,
               not_before: dt.datetime, not_after: dt.datetime,
               dns_names: list[str] | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if dns_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                critical=False)
        signer = issuer.key if issuer else key
        return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclasses.dataclass(frozen=True)
class Site:
    ip: str
    port: int
    cert_pem: bytes  # what nginx sends: leaf first, then any intermediates
    key_pem: bytes

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def free_port(ips: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A TCP port that is free on every address in ``ips`` right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = probe.getsockname()[1]
        if all(_bindable(ip, port) for ip in ips[1:]):
            return port
    raise RuntimeError("no common free port")


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


class NginxPool:
    """One nginx master serving every added site. Use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sites: list[Site] = []
        self.process: subprocess.Popen[bytes] | None = None

    def add(self, ip: str, port: int, cert_pem: bytes, key_pem: bytes) -> Site:
        site = Site(ip, port, cert_pem, key_pem)
        self.sites.append(site)
        return site

    def replace(self, site: Site, cert_pem: bytes, key_pem: bytes) -> Site:
        """Deploy another certificate to ``site`` (takes effect at ``reload``)."""
        new = Site(site.ip, site.port, cert_pem, key_pem)
        self.sites[self.sites.index(site)] = new
        return new

    def reload(self) -> None:
        """Rewrite the config and files and SIGHUP the master, as an operator's reload.
        New connections see the new certificates once the new workers run: poll."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("nginx is not running")
        (self.workdir / "nginx.conf").write_text(self._config())
        self.process.send_signal(signal.SIGHUP)

    def start(self, timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self._config())
        errlog = self.workdir / "error.log"
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.workdir), "-e", str(errlog), "-c", str(conf),
             "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        pending = {(s.ip, s.port) for s in self.sites}
        while pending:
            if self.process.poll() is not None:
                log = errlog.read_text() if errlog.exists() else ""
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not listen on {sorted(pending)[:5]}")
            pending = {addr for addr in pending if not _listening(*addr)}
            if pending:
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: master waits for workers
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> "NginxPool":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _config(self) -> str:
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        blocks = []
        for index, site in enumerate(self.sites):
            cert = self.workdir / f"site{index}.crt"
            key = self.workdir / f"site{index}.key"
            cert.write_bytes(site.cert_pem)
            key.write_bytes(site.key_pem)
            key.chmod(0o600)
            blocks.append(
                f"  server {{\n"
                f"    listen {site.ip}:{site.port} ssl;\n"
                f"    ssl_certificate {cert};\n"
                f"    ssl_certificate_key {key};\n"
                f"    return 204;\n"
                f"  }}\n")
        return (
            f"worker_processes 1;\n"
            f"pid {self.workdir / 'nginx.pid'};\n"
            f"error_log {self.workdir / 'error.log'} warn;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n"
            f"  access_log off;\n"
            f"  client_body_temp_path {tmp}/body;\n"
            f"  proxy_temp_path {tmp}/proxy;\n"
            f"  fastcgi_temp_path {tmp}/fastcgi;\n"
            f"  uwsgi_temp_path {tmp}/uwsgi;\n"
            f"  scgi_temp_path {tmp}/scgi;\n"
            + "".join(blocks) +
            "}\n")


def _listening(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False
