"""Find certificates in a directory tree: PEM, DER and PKCS#12 files.

Discovery inventories; it never collects keys. PEM blocks other than certificates are
skipped by label (a file holding a private key block is only *named* in ``key_files``),
and a PKCS#12 key is dropped as soon as the bundle is opened. Results and error reasons
carry paths and public certificate facts, never file content or passwords.

Bounds, so a scan of a large or hostile tree stays cheap:

- at most ``max_files`` regular files are read (``truncated`` tells when the cap hit);
- a file larger than ``max_file_size`` is reported as ``too-large`` and not read;
- directory symlinks are not followed (``os.walk(followlinks=False)``); a file symlink is
  read only when its resolved target lies inside the resolved root, otherwise it is
  reported as ``symlink-outside-root``; each file (device, inode) is read once;
- files are opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be regular files, so a FIFO
  or device cannot block or flood the scan.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import os
import re
import stat
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs12

from ..clock import rfc3339

DER_SUFFIXES = (".der", ".cer", ".crt")
PKCS12_SUFFIXES = (".p12", ".pfx")
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_FILE_SIZE = 1024 * 1024

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----(.*?)-----END \1-----", re.S)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}


@dataclasses.dataclass(frozen=True)
class FoundCertificate:
    """Public facts about one certificate seen on disk or on the wire."""

    sha256_fingerprint: str  # hex of the certificate's DER
    subject: str  # RFC 4514
    dns_names: tuple[str, ...]
    issuer: str  # RFC 4514
    serial: str  # lowercase hex
    not_before: dt.datetime
    not_after: dt.datetime
    source: str  # "file:/path" or "tls:host:port"
    is_ca: bool

    @property
    def served(self) -> bool:
        """Presented as the leaf of a TLS handshake. Whatever its CA flag says, such a
        certificate identifies a server: a default ``openssl req -x509`` self-signed
        certificate carries CA:TRUE and is the most common shadow certificate of all."""
        return self.source.startswith("tls:")

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256_fingerprint": self.sha256_fingerprint,
            "subject": self.subject,
            "dns_names": list(self.dns_names),
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "source": self.source,
            "is_ca": self.is_ca,
        }


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file that may hold certificates but was not (fully) read.

    ``reason``: ``locked`` (PKCS#12 no configured password opens; also a corrupt one),
    ``too-large``, ``symlink-outside-root``, ``unreadable``, ``unparseable``.
    """

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class FileScanResult:
    found: tuple[FoundCertificate, ...]
    skipped: tuple[SkippedFile, ...]
    key_files: tuple[str, ...]  # paths holding private keys; their content is never read out
    files_scanned: int
    truncated: bool


def describe(cert: x509.Certificate, source: str) -> FoundCertificate:
    """Public facts of ``cert``.

    :raises ValueError: an extension is malformed.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return FoundCertificate(
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        subject=cert.subject.rfc4514_string(),
        dns_names=dns_names,
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        source=source,
        is_ca=is_ca,
    )


def describe_der(der: bytes, source: str) -> FoundCertificate:
    """:raises ValueError: ``der`` is not a certificate."""
    return describe(x509.load_der_x509_certificate(der), source)


def scan_files(root: str | os.PathLike[str], *, passwords: Iterable[str | bytes] = (),
               max_files: int = DEFAULT_MAX_FILES,
               max_file_size: int = DEFAULT_MAX_FILE_SIZE) -> FileScanResult:
    """Walk ``root`` (a directory or one file) and report every certificate found.

    ``passwords`` are tried on PKCS#12 files after the empty password; they are never
    logged or returned.
    """
    scanner = _Scanner([p.encode() if isinstance(p, str) else p for p in passwords],
                       max_file_size)
    root_path = os.path.abspath(os.fspath(root))
    root_real = os.path.realpath(root_path)
    seen: set[tuple[int, int]] = set()
    scanned = 0
    truncated = False
    links: list[str] = []
    for path, is_link in _candidates(root_path, links):
        try:
            st = os.lstat(path)
            target = path
            if is_link:
                target = os.path.realpath(path)
                if not _inside(target, root_real):
                    scanner.skip(path, "symlink-outside-root")
                    continue
                st = os.stat(target)
            elif stat.S_ISLNK(st.st_mode):
                links.append(path)
                continue
        except OSError:
            scanner.skip(path, "unreadable")
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        if scanned >= max_files:
            truncated = True
            break
        seen.add((st.st_dev, st.st_ino))
        scanned += 1
        scanner.scan(path, target)
    return FileScanResult(tuple(scanner.found), tuple(scanner.skipped),
                          tuple(scanner.key_files), scanned, truncated)


def _candidates(root: str, links: list[str]) -> Iterable[tuple[str, bool]]:
    """Every file path under ``root`` as ``(path, False)``, then each path the caller
    appended to ``links`` meanwhile as ``(path, True)``: real files are read before
    symlinks, so a file reachable both ways is reported under its own path."""
    if not os.path.isdir(root):
        yield root, False
    else:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                yield os.path.join(dirpath, name), False
    for link in links:
        yield link, True


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _Scanner:
    def __init__(self, passwords: list[bytes], max_file_size: int) -> None:
        self._passwords = passwords
        self._max = max_file_size
        self.found: list[FoundCertificate] = []
        self.skipped: list[SkippedFile] = []
        self.key_files: list[str] = []

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedFile(path, reason))

    def scan(self, path: str, target: str) -> None:
        data = self._read(path, target)
        if data is None:
            return
        source = "file:" + path
        lower = path.lower()
        if b"-----BEGIN " in data:
            self._pem(path, data, source)
        elif lower.endswith(PKCS12_SUFFIXES):
            self._pkcs12(path, data, source)
        elif lower.endswith(DER_SUFFIXES):
            self._der(path, data, source)

    def _read(self, path: str, target: str) -> bytes | None:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.skip(path, "unreadable")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            if st.st_size > self._max:
                self.skip(path, "too-large")
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(self._max + 1)
            if len(data) > self._max:
                self.skip(path, "too-large")
                return None
            return data
        except OSError:
            self.skip(path, "unreadable")
            return None
        finally:
            os.close(fd)

    def _pem(self, path: str, data: bytes, source: str) -> None:
        bad = False
        for match in _PEM_BLOCK.finditer(data):
            label = match.group(1)
            if b"PRIVATE KEY" in label:
                if path not in self.key_files:
                    self.key_files.append(path)
                continue
            if label not in _CERT_LABELS:
                continue
            try:
                der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
                self.found.append(describe_der(der, source))
            # One malformed block must not stop the inventory; cryptography raises
            # ValueError and, for odd encodings, warnings turned into errors.
            except (ValueError, binascii.Error, Warning):
                bad = True
        if bad:
            self.skip(path, "unparseable")

    def _der(self, path: str, data: bytes, source: str) -> None:
        try:
            self.found.append(describe_der(data, source))
        except (ValueError, Warning):
            self.skip(path, "unparseable")

    def _pkcs12(self, path: str, data: bytes, source: str) -> None:
        for password in [None, b"", *self._passwords]:
            try:
                bundle = pkcs12.load_pkcs12(data, password)
            except (ValueError, TypeError, Warning):
                continue
            has_key = bundle.key is not None
            certs = ([bundle.cert.certificate] if bundle.cert else []) + [
                c.certificate for c in bundle.additional_certs]
            del bundle
            if has_key:
                self.key_files.append(path)
            try:
                self.found.extend(describe(c, source) for c in certs)
            except (ValueError, Warning):
                self.skip(path, "unparseable")
            return
        self.skip(path, "locked")


__all__ = ["FoundCertificate", "SkippedFile", "FileScanResult", "describe", "describe_der",
           "scan_files"]
