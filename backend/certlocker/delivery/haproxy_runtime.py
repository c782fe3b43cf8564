"""Hot certificate update through HAProxy's Runtime API, instead of a reload.

A reload (SIGUSR2 to the master) starts a new worker and lets the old one drain; with
long-lived connections, many processes, or thousands of certificates that is costly.
HAProxy 2.2+ can swap a certificate in memory over its stats socket (``level admin``)::

    set ssl cert <crt path> <<
    <leaf, chain, key PEM>
    <empty line>
    commit ssl cert <crt path>

That changes MEMORY ONLY: the next reload or restart reads the file again. So the file
is written first, atomically, and put back if HAProxy refuses the update, keeping the
rule of the deploy hook: the file on disk is what HAProxy serves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..errors import DeliveryFailed, InvalidInput
from . import formats
from .files import write_atomic

_KEY_BLOCK = re.compile(
    r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\r?\n.+?-----END (?:[A-Z]+ )?PRIVATE KEY-----",
    re.DOTALL)
_CERT_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)
_SHA1 = re.compile(r"^SHA1 FingerPrint:\s*([0-9A-Fa-f]{40})\s*$", re.MULTILINE)
_MAX_ANSWER = 1 << 20


class RuntimeApi:
    """One HAProxy stats socket: a Unix socket path, or ``host:port`` for a TCP one.

    Each command is one connection (HAProxy's non-interactive mode): send the line,
    read the answer until HAProxy closes.
    """

    def __init__(self, address: str | Path, timeout: float = 10.0) -> None:
        self.address = str(address)
        self.timeout = timeout

    def command(self, line: str, payload: str | None = None) -> str:
        """Run ``line`` (with ``payload`` after ``<<``) and return HAProxy's answer.

        :raises DeliveryFailed: the socket cannot be reached or answers nothing.
        """
        if "\n" in line:
            raise InvalidInput("command", "must be one line")
        text = line + "\n"
        if payload is not None:
            body = payload.strip("\n")
            if "\n\n" in body:  # an empty line ends the payload early
                raise InvalidInput("payload", "must not contain empty lines")
            text = f"{line} <<\n{body}\n\n"
        try:
            with self._connect() as conn:
                conn.sendall(text.encode("utf-8"))
                chunks, size = [], 0
                while size < _MAX_ANSWER:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise DeliveryFailed(f"HAProxy runtime API at {self.address}: "
                                 f"{type(exc).__name__}: {exc.strerror or exc}",
                                 target=self.address) from None
        return b"".join(chunks).decode("utf-8", "replace")

    def _connect(self) -> socket.socket:
        if self.address.startswith("/") or ":" not in self.address:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(self.timeout)
            try:
                conn.connect(self.address)
            except BaseException:
                conn.close()
                raise
            return conn
        host, _, port = self.address.rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)


@dataclasses.dataclass(frozen=True)
class Update:
    """What :func:`hot_update` did; ``changed`` is False when HAProxy already served it."""

    crt_path: Path
    sha256: str
    changed: bool


def parse_combined(pem: str) -> formats.Bundle:
    """Split a combined HAProxy file (leaf first, then intermediates, and the key) into
    a bundle, refusing a key that does not match the leaf.

    :raises InvalidInput: no certificate, no or several keys, or a mismatched key.
    """
    certs = _CERT_BLOCK.findall(pem)
    keys = _KEY_BLOCK.findall(pem)
    if not certs:
        raise InvalidInput("certificate", "no certificate in the file")
    if len(keys) != 1:
        raise InvalidInput("private_key", "the file must hold exactly one private key")
    bundle = formats.Bundle(certs[0] + "\n", "".join(c + "\n" for c in certs[1:]),
                            keys[0] + "\n")
    formats.haproxy_pem(bundle)  # parses, and refuses a key that does not match
    return bundle


def served_sha1(api: RuntimeApi, crt_path: Path) -> str | None:
    """The SHA-1 fingerprint (lowercase hex) HAProxy holds in memory for ``crt_path``,
    or None if HAProxy does not know the file."""
    match = _SHA1.search(api.command(f"show ssl cert {crt_path}"))
    return match.group(1).lower() if match else None


def hot_update(api: RuntimeApi, crt_path: Path, pem: str) -> Update:
    """Install ``pem`` (leaf, chain, key) at ``crt_path`` and swap it into HAProxy's
    memory without a reload. ``crt_path`` must be the path a ``crt`` line of the running
    configuration names (HAProxy keys its certificates by file name).

    Order: check the pair, write the file atomically, ``set ssl cert``, ``commit ssl
    cert``. If HAProxy refuses, the transaction is aborted and the previous file put
    back, so disk and memory agree.

    :raises InvalidInput: the PEM does not parse or its key does not match.
    :raises DeliveryFailed: HAProxy refused (unknown file, bad certificate, socket down).
    """
    crt_path = Path(crt_path)
    bundle = parse_combined(pem)
    content = formats.haproxy_pem(bundle)
    leaf_der = x509.load_pem_x509_certificate(bundle.certificate.encode()).public_bytes(
        Encoding.DER)
    sha256 = hashlib.sha256(leaf_der).hexdigest()
    on_disk = crt_path.read_bytes() if crt_path.exists() else None
    if (on_disk == content.encode()
            and served_sha1(api, crt_path) == hashlib.sha1(leaf_der).hexdigest()):
        return Update(crt_path, sha256, changed=False)

    write_atomic(crt_path, content)
    try:
        answer = api.command(f"set ssl cert {crt_path}", content)
        if "Transaction created" not in answer and "Transaction updated" not in answer:
            raise DeliveryFailed(f"HAProxy refused set ssl cert {crt_path}: "
                                 f"{_first_lines(answer)}", target=api.address)
        answer = api.command(f"commit ssl cert {crt_path}")
        if "Success!" not in answer:
            api.command(f"abort ssl cert {crt_path}")
            raise DeliveryFailed(f"HAProxy refused commit ssl cert {crt_path}: "
                                 f"{_first_lines(answer)}", target=api.address)
    except BaseException:
        if on_disk is None:
            crt_path.unlink(missing_ok=True)
        else:
            write_atomic(crt_path, on_disk)
        raise
    return Update(crt_path, sha256, changed=True)


def deliver(socket_address: str | Path, staged: Path, crt_path: Path,
            timeout: float = 10.0) -> Update:
    """The agent hook: read the rendered ``staged`` file and hot-update ``crt_path``.

    :raises InvalidInput, DeliveryFailed: see :func:`hot_update`.
    :raises OSError: ``staged`` cannot be read.
    """
    pem = Path(staged).read_text(encoding="ascii")
    return hot_update(RuntimeApi(socket_address, timeout), Path(crt_path), pem)


def _first_lines(answer: str) -> str:
    text = " ".join(line.strip() for line in answer.strip().splitlines()[:3])
    return text[:300] or "(no answer)"
