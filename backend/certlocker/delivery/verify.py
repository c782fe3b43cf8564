"""Served-certificate verification: is every target node serving the certificate we issued?

For each target (and, for a pool, each node IP) we complete a real TLS handshake, take
the leaf the server sent, and compare its SHA-256 fingerprint with the issued one. A
renewed certificate that HAProxy never reloaded, or two nodes of six still on last
month's certificate, show up here and nowhere else.

Statuses, in order of precedence (the first that applies wins):

``unreachable``       no TCP connection or no TLS handshake within the timeout
``expired``           the served leaf's ``not_after`` has passed. This outranks identity
                      because it is what clients experience right now; ``detail`` says
                      whether it was the current, an older or an unrelated certificate
``mismatch``          the served leaf is neither the current certificate nor an older one
``stale``             the served leaf is an older version of this certificate (renewed,
                      not yet deployed or reloaded)
``chain-incomplete``  the current leaf, but the server does not send the intermediates
                      a client needs to reach a trusted root
``ok``                the current leaf with a usable chain

and, with an allow-list (``delivery.target_policy``), ``forbidden``: the node lies
outside it and was never contacted.

Chain completeness is decided offline from the certificates the server sent (Python
3.11's ``ssl`` exposes them through the private ``_sslobj.get_unverified_chain()``,
public as ``SSLSocket.get_unverified_chain()`` from 3.13): following signatures from
the leaf through the served certificates must reach a self-signed certificate or one
issued by a trust anchor. Anchors are the system bundle plus whatever the caller adds
(a private CA's root, Pebble's root). With a private CA whose root the caller does not
pass, a correctly served chain reports ``chain-incomplete``: a client that trusts only
those anchors could not build a path either.
"""

from __future__ import annotations

import _ssl  # ENCODING_DER for the private chain accessor before Python 3.13
import concurrent.futures
import dataclasses
import datetime as dt
import functools
import hashlib
import ipaddress
import socket
import ssl
import re
import time
import warnings
from typing import Callable, Collection, Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.utils import CryptographyDeprecationWarning

from ..fanout import bounded_map
from ..models import CertificateInfo, Target, TargetStatus
from . import target_policy
from .target_policy import (FORBIDDEN, Refusal, Resolver, TargetPolicy, connect_first,
                            system_resolver)

OK = "ok"
STALE = "stale"
MISMATCH = "mismatch"
EXPIRED = "expired"
UNREACHABLE = "unreachable"
CHAIN_INCOMPLETE = "chain-incomplete"

DEFAULT_PORT = 443
_MAX_DETAIL = 300
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Served:
    """What one server sent: facts about its leaf and whether its chain is usable."""

    sha256: str  # lowercase hex of the leaf's DER
    serial: str  # lowercase hex, no colons
    not_before: dt.datetime
    not_after: dt.datetime
    chain: tuple[bytes, ...]  # DER as sent, leaf first
    missing_issuer: str | None = None  # RFC 4514 name of the issuer no one provided


class TrustAnchors:
    """Root certificates a client is assumed to trust, indexed by subject."""

    def __init__(self, certificates: Iterable[x509.Certificate] = ()) -> None:
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        for cert in certificates:
            self._by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)

    @classmethod
    def from_pem(cls, pem: bytes | str, *, include_system: bool = True) -> "TrustAnchors":
        """Anchors from a PEM bundle, plus the system bundle unless told otherwise.

        :raises ValueError: if ``pem`` holds no certificate.
        """
        data = pem.encode() if isinstance(pem, str) else pem
        extra = x509.load_pem_x509_certificates(data)
        base = list(_system_certificates()) if include_system else []
        return cls(base + extra)

    @classmethod
    def system(cls) -> "TrustAnchors":
        return cls(_system_certificates())

    def issued(self, cert: x509.Certificate) -> bool:
        """True if ``cert`` is an anchor or is signed by one."""
        for anchor in self._by_subject.get(cert.issuer.public_bytes(), ()):
            if anchor == cert or _signed_by(cert, anchor):
                return True
        return False


@functools.lru_cache(maxsize=1)
def _system_certificates() -> tuple[x509.Certificate, ...]:
    """The system CA bundle, loaded once. A root cryptography cannot parse is skipped
    (Debian's bundle holds one with a negative serial, which cryptography warns about)."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if not path:
            continue
        try:
            with open(path, "rb") as fh:
                bundle = fh.read()
        except OSError:
            continue
        certs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            for block in _PEM_BLOCK.findall(bundle):
                try:
                    certs.append(x509.load_pem_x509_certificate(block))
                except ValueError:
                    continue
        return tuple(certs)
    return ()


def missing_issuer(chain: Sequence[bytes], anchors: TrustAnchors) -> str | None:
    """None if the served ``chain`` (DER, leaf first, any order after it) reaches an
    anchor or a self-signed certificate; otherwise the name of the first issuer that
    neither the server nor the anchors provide."""
    current = x509.load_der_x509_certificate(chain[0])
    pool = [cert for cert in map(_load_or_none, chain[1:]) if cert is not None]
    certs = [current] + pool
    for _ in range(len(certs)):
        if anchors.issued(current) or _self_signed(current):
            return None
        parent = next((c for c in pool
                       if c.subject == current.issuer and _signed_by(current, c)), None)
        if parent is None:
            break
        pool.remove(parent)
        current = parent
    return current.issuer.rfc4514_string()


def probe(address: str, sni: str | None, ip: str | Sequence[str] | None, timeout: float,
          anchors: TrustAnchors | None = None) -> Served:
    """Complete one TLS handshake and describe what the server sent.

    Certificate verification is deliberately off: we are asking *which* certificate a
    server presents, not whether to trust it. An expired, self-signed or wrong-name
    certificate must still be fetched so it can be reported as such; trust is judged
    afterwards by fingerprint and by ``missing_issuer``.

    ``address`` is ``host:port`` (``[v6]:port``; the port defaults to 443). ``ip``, when
    given, is dialled instead of resolving the host (one node of a pool, or the addresses
    the allow-list checked, tried in turn until one connects). SNI is ``sni``, else the
    host when it is a name. ``timeout`` bounds connect plus handshake.

    :raises OSError: (including ``ssl.SSLError`` and ``TimeoutError``) when the
        connection or handshake fails. ``ValueError`` for an unparseable address.
    """
    host, port = split_address(address)
    server_name = sni or (None if _is_ip(host) else host)
    deadline = time.monotonic() + timeout
    context = _client_context()
    candidates = (ip,) if isinstance(ip, str) else tuple(ip or ()) or (host,)
    with connect_first(candidates, port, timeout) as raw:
        raw.settimeout(max(0.001, deadline - time.monotonic()))
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            leaf = tls.getpeercert(binary_form=True)
            chain = _peer_chain(tls) or ((leaf,) if leaf else ())
    if not leaf:
        raise ssl.SSLError("server sent no certificate")
    if chain[0] != leaf:
        chain = (leaf,) + tuple(c for c in chain if c != leaf)
    cert = x509.load_der_x509_certificate(leaf)
    return Served(
        sha256=hashlib.sha256(leaf).hexdigest(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        chain=chain,
        missing_issuer=missing_issuer(chain, anchors or TrustAnchors.system()),
    )


def classify(
    expected: CertificateInfo,
    history: Collection[str],
    served: Served | None,
    error: str | None,
    now: dt.datetime,
) -> TargetStatus:
    """Turn one probe's outcome into a status; see the module docstring for precedence.

    ``history`` identifies older versions of this certificate: each entry is a SHA-256
    fingerprint (64 hex digits) or a serial number in hex (``CertificateStatus.history``
    keeps serials); colons and case are ignored. The returned status's ``address`` is
    empty; ``verify_targets`` fills it in.
    """
    if served is None:
        return TargetStatus("", UNREACHABLE, None, now, _short(error or "no answer"))
    current = _norm(expected.sha256_fingerprint) == served.sha256
    older = not current and _in_history(history, served)
    which = "current" if current else "older" if older else "unrelated"
    if served.not_after < now:
        return _status(EXPIRED, served, now,
                       f"{which} certificate (serial {served.serial}) expired "
                       f"{served.not_after.isoformat()}")
    if not current and not older:
        return _status(MISMATCH, served, now, f"unrelated certificate, serial {served.serial}")
    if older:
        return _status(STALE, served, now, f"older certificate, serial {served.serial}")
    if served.missing_issuer is not None:
        return _status(CHAIN_INCOMPLETE, served, now,
                       f"no certificate for issuer {served.missing_issuer}")
    return _status(OK, served, now, None)


def verify_targets(
    expected: CertificateInfo,
    history: Collection[str],
    targets: Sequence[Target],
    *,
    pool: concurrent.futures.Executor,
    now: dt.datetime,
    timeout: float = 3.0,
    parallelism: int = 64,
    anchors: TrustAnchors | None = None,
    rechecks: int = 3,
    recheck_pause: float = 0.5,
    policy: TargetPolicy | None = None,
    resolve: Resolver = system_resolver,
) -> list[TargetStatus]:
    """Probe every target, every pool node separately, ``parallelism`` at a time on
    ``pool`` (an executor the caller does not itself run on).

    A target with ``ips`` is a pool behind one name: each IP is dialled at the target's
    port with the target's SNI (its ``sni``, else its host name), and reported as its own
    ``ip:port`` with the name in ``detail``. Results keep the order of ``targets`` (and of
    their ``ips``). One failing node never stops the sweep. ``anchors`` defaults to the
    system bundle; pass the issuing CA's root for private CAs.

    Each probe is bounded by ``timeout`` once the name is resolved (the stdlib resolver
    has no timeout of its own; pools given by IP skip it).

    A node found ``stale`` is probed ``rechecks`` more times, ``recheck_pause`` apart:
    after a graceful reload nginx's and HAProxy's old workers keep accepting for a
    moment, so one handshake can meet the old certificate on a node that has moved on.
    Only a node that never serves the older certificate again is reported by what it
    serves now; otherwise it stays ``stale``, saying on how many handshakes.

    With a ``policy``, every node is admitted (``target_policy.admit``) before each
    connection: one outside it is reported ``forbidden`` with the reason and never
    contacted, and a name is resolved once with ``resolve`` and dialled at the addresses
    that were checked.
    """
    anchors = anchors or TrustAnchors.system()
    jobs = [job for target in targets for job in _expand(target)]
    if not jobs:
        return []
    history_set = frozenset(history)

    def once(job: _Job) -> TargetStatus:
        try:
            dial: str | Sequence[str] | None = job.ip
            if policy is not None:
                admitted = target_policy.admit(policy, job.host, job.port, pinned=job.ip,
                                               resolve=resolve)
                if isinstance(admitted, Refusal):
                    return TargetStatus("", FORBIDDEN, None, now, _short(admitted.reason))
                dial = admitted
            served = probe(job.address, job.sni, dial, timeout, anchors)
            return classify(expected, history_set, served, None, now)
        except (OSError, ValueError) as exc:
            return classify(expected, history_set, None, _describe(exc), now)

    def run(job: _Job) -> TargetStatus:
        if job.invalid is not None:
            return TargetStatus(job.report, UNREACHABLE, None, now, job.invalid)
        result = once(job)
        if result.status == STALE and rechecks > 0:
            result = _recheck_stale(result, lambda: once(job), rechecks, recheck_pause)
        detail = result.detail
        if job.pool_name:
            detail = f"{job.pool_name}: {detail}" if detail else job.pool_name
        return dataclasses.replace(result, address=job.report, detail=detail)

    return bounded_map(pool, run, jobs, min(parallelism, len(jobs)))


def under_policy(policy: Callable[[], TargetPolicy], pool: concurrent.futures.Executor,
                 resolve: Resolver = system_resolver) -> Callable[..., list[TargetStatus]]:
    """``verify_targets`` under the allow-list ``policy()`` answers at each call, its
    handshakes on ``pool``: what the verifier and the revocation check run, so no path
    probes an unchecked address."""
    def verify(expected: CertificateInfo, history: Collection[str],
               targets: Sequence[Target], **options: object) -> list[TargetStatus]:
        return verify_targets(expected, history, targets, pool=pool, policy=policy(),
                              resolve=resolve, **options)  # type: ignore[arg-type]
    return verify


def _recheck_stale(first: TargetStatus, again: Callable[[], TargetStatus], times: int,
                   pause: float) -> TargetStatus:
    later = []
    for _ in range(times):
        time.sleep(pause)
        later.append(again())
    stale = 1 + sum(r.status == STALE for r in later)
    if stale == 1:
        return later[-1]  # it was mid-reload: what it serves now
    return dataclasses.replace(
        first, detail=_short(f"{first.detail}, on {stale} of {times + 1} handshakes"))


split_address = target_policy.split_address  # one parser: what is checked is what is dialled


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass(frozen=True)
class _Job:
    report: str
    address: str
    sni: str | None
    ip: str | None
    host: str = ""
    port: int = DEFAULT_PORT
    pool_name: str | None = None
    invalid: str | None = None


def _expand(target: Target) -> list[_Job]:
    try:
        host, port = split_address(target.address)
    except ValueError as exc:
        return [_Job(target.address, target.address, None, None, invalid=str(exc))]
    if not target.ips:
        return [_Job(target.address, target.address, target.sni, None, host, port)]
    name = target.sni or host
    return [_Job(join_address(ip, port), target.address, target.sni, ip, host, port,
                 pool_name=name)
            for ip in target.ips]


@functools.lru_cache(maxsize=1)
def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _peer_chain(tls: ssl.SSLSocket) -> tuple[bytes, ...]:
    public = getattr(tls, "get_unverified_chain", None)
    if public is not None:  # Python 3.13+
        return tuple(public())
    sslobj = getattr(tls, "_sslobj", None)
    private = getattr(sslobj, "get_unverified_chain", None)
    if private is None:
        return ()
    return tuple(c.public_bytes(_ssl.ENCODING_DER) for c in private() or ())


def _load_or_none(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and _signed_by(cert, cert)


def _in_history(history: Collection[str], served: Served) -> bool:
    for entry in history:
        norm = _norm(entry)
        if len(norm) == 64:
            if norm == served.sha256:
                return True
        elif norm and norm.lstrip("0") == served.serial.lstrip("0"):
            return True
    return False


def _norm(value: str) -> str:
    return value.replace(":", "").strip().lower()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _status(status: str, served: Served, now: dt.datetime, detail: str | None) -> TargetStatus:
    return TargetStatus("", status, served.sha256, now, detail)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return _short(f"TLS handshake failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return _short(f"{type(exc).__name__}: {exc}")


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL - 3] + "..."
