"""Test helpers: a throwaway CA, and real nginx / HAProxy on loopback.

Servers run in the foreground as children of the test (``daemon off`` / ``-db``), each
with its own config, pid file and log in a tmp dir, and are stopped by their own PID in
teardown — never by name, since other tests run the same binaries on this machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

# --- certificates ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IssuedChain:
    """PEM strings for a leaf issued by an intermediate under a root."""

    root: str
    chain: str  # the intermediate
    certificate: str
    private_key: str = dataclasses.field(repr=False)

    @property
    def fullchain(self) -> str:
        return self.certificate + self.chain

    @property
    def sha256_fingerprint(self) -> str:
        leaf = x509.load_pem_x509_certificate(self.certificate.encode())
        return leaf.fingerprint(hashes.SHA256()).hex()

    def vault_secret(self) -> dict[str, str]:
        leaf = x509.load_pem_x509_certificate(self.certificate.encode())
        return {
            "certificate": self.certificate,
            "chain": self.chain,
            "fullchain": self.fullchain,
            "private_key": self.private_key,
            "serial": format(leaf.serial_number, "x"),
            "not_before": leaf.not_valid_before_utc.isoformat().replace("+00:00", "Z"),
            "not_after": leaf.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
            "sha256_fingerprint": self.sha256_fingerprint,
            "issuer": "test-ca",
        }


def new_key(kind: str = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(kind)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool,
          names: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def issue_test_chain(kind: str = "ec", names: tuple[str, ...] = ("localhost",)) -> IssuedChain:
    """A fresh root, intermediate and leaf; the leaf key is ``kind`` ("ec" or "rsa")."""
    root_key, int_key, leaf_key = new_key("ec"), new_key("ec"), new_key(kind)
    root = _cert("certlocker test root", root_key, "certlocker test root", root_key, ca=True)
    inter = _cert("certlocker test intermediate", int_key, "certlocker test root",
                  root_key, ca=True)
    leaf = _cert(names[0], leaf_key, "certlocker test intermediate", int_key, ca=False,
                 names=names)
    return IssuedChain(_pem(root), _pem(inter), _pem(leaf), _key_pem(leaf_key))


# --- ports, handshakes, waiting -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_sha256(port: int, host: str = "127.0.0.1", sni: str = "localhost",
                  timeout: float = 3.0) -> str:
    """Handshake with ``host:port`` and return the hex SHA-256 of the served leaf's DER.

    No verification: the point is to see which certificate is served, valid or not.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def try_served_sha256(port: int) -> str | None:
    try:
        return served_sha256(port)
    except (OSError, ssl.SSLError):
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.2) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(up, timeout, f"port {port}")


# --- servers --------------------------------------------------------------------------


@dataclasses.dataclass
class TlsServer:
    """A foreground server process we started; ``reload_command`` is what a hook runs."""

    name: str
    port: int
    proc: subprocess.Popen
    config: Path
    cert_path: Path
    log: Path
    check_command: list[str]
    reload_command: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def served_sha256(self) -> str | None:
        return try_served_sha256(self.port)

    def settled(self) -> bool:
        """No reload under way: the master has only its one worker.

        During a graceful reload the old worker keeps accepting for a moment next to the
        new one, so one handshake with the new certificate does not yet mean every
        handshake gets it."""
        return len(_children(self.pid)) == 1

    def serves(self, fingerprint: str) -> bool:
        """Settled, and a new handshake gets ``fingerprint``."""
        return self.settled() and self.served_sha256() == fingerprint

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _nginx_conf(workdir: Path, port: int, cert_path: Path, log: Path, pid: Path) -> str:
    """One TLS server on loopback for ``cert_path`` (leaf, chain and key in one file)."""
    return f"""
master_process on;
worker_processes 1;
pid {pid};
error_log {log} info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate     {cert_path};
        ssl_certificate_key {cert_path};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_nginx(workdir: Path, cert_path: Path, port: int | None = None) -> TlsServer:
    """Real nginx serving ``cert_path`` (leaf, chain and key in one file) on loopback.

    The master runs in the foreground (``daemon off``), so its PID is our child's PID;
    ``reload_command`` is ``nginx -s reload`` against this instance's pid file.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf, log = workdir / "nginx.conf", workdir / "error.log"
    conf.write_text("daemon off;\n" + _nginx_conf(workdir, port, cert_path, log,
                                                  workdir / "nginx.pid"))
    base = ["nginx", "-p", str(workdir), "-e", str(log), "-c", str(conf)]
    proc = subprocess.Popen(base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = TlsServer("nginx", port, proc, conf, cert_path, log,
                       check_command=base + ["-t", "-q"],
                       reload_command=base + ["-s", "reload"])
    try:
        wait_for_port(port, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


def _haproxy_cfg(port: int, cert_path: Path, global_lines: str) -> str:
    """One TLS frontend on loopback for ``cert_path`` that answers 200 "ok"."""
    return f"""
global
{global_lines}

defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend tls
    bind 127.0.0.1:{port} ssl crt {cert_path}
    http-request return status 200 content-type text/plain string ok
"""


def start_haproxy(workdir: Path, cert_path: Path, port: int | None = None,
                  stats_socket: Path | None = None) -> TlsServer:
    """Real HAProxy in master-worker mode (``-W -db``) serving ``cert_path``.

    Reload is ``SIGUSR2`` to the master (our child): the master re-reads the config and
    the certificate files and starts a new worker; the old one finishes its connections.
    ``stats_socket`` adds a Runtime API socket (``level admin``) at that path.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg, log = workdir / "haproxy.cfg", workdir / "haproxy.log"
    stats = f"\n    stats socket {stats_socket} mode 600 level admin" if stats_socket else ""
    cfg.write_text(_haproxy_cfg(port, cert_path, "    log stderr format raw local0 info\n"
                                f"    pidfile {workdir}/haproxy.pid{stats}"))
    logf = open(log, "ab")
    try:
        proc = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(cfg)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    finally:
        logf.close()
    server = TlsServer("haproxy", port, proc, cfg, cert_path, log,
                       check_command=["haproxy", "-c", "-q", "-f", str(cfg)],
                       reload_command=["kill", "-USR2", str(proc.pid)])
    try:
        wait_for_port(port, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


# --- servers configured for a certificate that is not there yet -----------------------


@dataclasses.dataclass
class PendingServer:
    """A server configured for ``cert_path`` on a fresh host: not running (it could not
    start without the file). ``start_command`` daemonizes it, as ``systemctl start``
    would; ``reload_command`` fails while it does not run. Once started, its master's PID
    is read from ``pid_file`` (checked against this server's config) and it is stopped by
    that PID."""

    name: str
    port: int
    config: Path
    cert_path: Path
    log: Path
    pid_file: Path
    check_command: list[str]
    reload_command: list[str]
    start_command: list[str]

    def master_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.config).encode() in cmdline else None

    def served_sha256(self) -> str | None:
        return try_served_sha256(self.port)

    def settled(self) -> bool:
        pid = self.master_pid()
        return pid is not None and len(_children(pid)) == 1

    def serves(self, fingerprint: str) -> bool:
        return self.settled() and self.served_sha256() == fingerprint

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not Path(f"/proc/{pid}").exists()
                       or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3],
                       10, f"{self.name} {pid} to stop")
        except (AssertionError, OSError):
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


def pending_nginx(workdir: Path, cert_path: Path) -> PendingServer:
    """nginx configured for ``cert_path`` (which need not exist), not started."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf, log, pid = workdir / "nginx.conf", workdir / "error.log", workdir / "nginx.pid"
    conf.write_text(_nginx_conf(workdir, port, cert_path, log, pid))
    base = ["nginx", "-p", str(workdir), "-e", str(log), "-c", str(conf)]
    return PendingServer("nginx", port, conf, cert_path, log, pid,
                         check_command=base + ["-t", "-q"],
                         reload_command=base + ["-s", "reload"],
                         start_command=base)


def pending_haproxy(workdir: Path, cert_path: Path) -> PendingServer:
    """HAProxy (master-worker) configured for ``cert_path``, not started; its start
    command daemonizes it (``-D``) and its reload is SIGUSR2 to the master's pid file."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg, log, pid = workdir / "haproxy.cfg", workdir / "haproxy.log", workdir / "haproxy.pid"
    cfg.write_text(_haproxy_cfg(port, cert_path, f"    pidfile {pid}"))
    return PendingServer("haproxy", port, cfg, cert_path, log, pid,
                         check_command=["haproxy", "-c", "-q", "-f", str(cfg)],
                         reload_command=["sh", "-c", f"kill -USR2 $(cat {pid})"],
                         start_command=["haproxy", "-W", "-D", "-f", str(cfg)])
