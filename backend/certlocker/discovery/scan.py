"""Find certificates served on the network, and sort them into managed and unmanaged.

``expand_targets`` turns an operator's target list into endpoints, refusing anything
that would expand past a hard cap. ``scan_endpoints`` does one real TLS handshake per
endpoint with bounded parallelism and records the served leaf. Certificate verification
is off on purpose: discovery inventories what is served, including expired, self-signed
and mis-named certificates; it trusts nothing it sees and sends nothing secret.

With an allow-list (``delivery.target_policy``) an endpoint outside it is never
contacted (``forbidden``), and a name is dialled only at the addresses that were checked.

``match_inventory`` compares what was found with the inventory by SHA-256 fingerprint;
certificates that are not in it are *unmanaged* (shadow) certificates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

from ..delivery.target_policy import (Refusal, Resolver, TargetPolicy, admit, check,
                                      connect_first, system_resolver)
from ..errors import InvalidInput
from ..fanout import completed
from ..names import dns_name
from .files import FoundCertificate, describe_der

MAX_ENDPOINTS = 4096
DEFAULT_EXPIRING_WITHIN = dt.timedelta(days=30)

Endpoint = tuple[str, int]
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class ScanError:
    """An endpoint that served no certificate.

    ``reason``: ``timeout``, ``refused``, ``unreachable``, ``dns``, ``tls-error``
    (handshake failed, e.g. a legacy-only or non-TLS service), ``no-certificate`` or
    ``forbidden`` (outside the allow-list: never contacted; ``detail`` says why).
    """

    host: str
    port: int
    reason: str
    detail: str | None = None

    @property
    def source(self) -> str:
        return f"tls:{_join(self.host, self.port)}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class Classified:
    found: FoundCertificate
    managed: bool
    certificate_id: str | None  # the inventory id when managed
    expiring_soon: bool
    expired: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.found.to_json(), "managed": self.managed,
                "certificate_id": self.certificate_id,
                "expiring_soon": self.expiring_soon, "expired": self.expired}


def expand_targets(spec: Sequence[str], *, limit: int = MAX_ENDPOINTS) -> list[Endpoint]:
    """Expand target strings into ``(host, port)`` endpoints, in order, without repeats.

    Accepted forms, each ``HOST:PORTS``:

    - HOST: a DNS name (not resolved here), an IPv4 address or CIDR (``10.0.0.0/30``),
      or an IPv6 address or CIDR in brackets (``[2001:db8::1]``, ``[2001:db8::/126]``).
      A CIDR expands to its usable hosts (``ipaddress`` ``hosts()``: no network or
      broadcast address for IPv4 prefixes shorter than /31).
    - PORTS: ``443``, a range ``8000-8010``, or a comma list of those.

    :raises InvalidInput: a malformed entry (``field`` is ``/targets/<index>``), or when
        the addresses or the endpoints would exceed ``limit``.
    """
    endpoints: dict[Endpoint, None] = {}
    addresses = 0
    for index, entry in enumerate(spec):
        field = f"/targets/{index}"
        if not isinstance(entry, str) or not entry.strip():
            raise InvalidInput(field, "must be a non-empty 'host:port' string")
        host_part, ports = _split(field, entry.strip())
        port_list = _ports(field, ports)
        count, hosts = _hosts(field, host_part)
        addresses += count
        if addresses > limit:
            raise InvalidInput(field, f"targets expand to more than {limit} addresses")
        if len(endpoints) + count * len(port_list) > limit:
            raise InvalidInput(field, f"targets expand to more than {limit} endpoints")
        for host in hosts:
            for port in port_list:
                endpoints[(host, port)] = None
    return list(endpoints)


def first_refusal(policy: TargetPolicy, endpoints: Iterable[Endpoint]) -> Refusal | None:
    """The first endpoint outside ``policy`` by its static rules (names unresolved)."""
    for host, port in endpoints:
        refusal = check(policy, host, port)
        if refusal is not None:
            return refusal
    return None


def scan_endpoints(endpoints: Iterable[Endpoint], pool: Executor, timeout: float = 5.0,
                   parallelism: int = 32, sni: str | None = None,
                   progress: Progress | None = None, policy: TargetPolicy | None = None,
                   resolve: Resolver = system_resolver) -> list[FoundCertificate | ScanError]:
    """Handshake with every endpoint and return what each served, in input order.

    ``timeout`` bounds the TCP connect and each read of the handshake. ``sni`` is sent to
    every endpoint when given; otherwise a DNS-name host is sent as SNI and an IP address
    sends none. ``progress(done, total)`` is called from worker threads as each finishes.
    ``policy``: the allow-list every endpoint is admitted by before it is dialled.
    The handshakes run on ``pool``, ``parallelism`` at a time.
    """
    items = list(endpoints)
    total = len(items)
    results: list[FoundCertificate | ScanError | None] = [None] * total
    if not items:
        return []
    context = _context()
    done = 0

    def one(endpoint: Endpoint) -> FoundCertificate | ScanError:
        return probe(endpoint[0], endpoint[1], timeout, sni, context, policy, resolve)

    for index, future in completed(pool, one, items, min(parallelism, total)):
        results[index] = future.result()
        done += 1
        if progress is not None:
            progress(done, total)
    return [r for r in results if r is not None]


def probe(host: str, port: int, timeout: float, sni: str | None = None,
          context: ssl.SSLContext | None = None, policy: TargetPolicy | None = None,
          resolve: Resolver = system_resolver) -> FoundCertificate | ScanError:
    """One TLS handshake; returns the served leaf's facts or why there was none."""
    ctx = context or _context()
    server_name = sni or (None if _is_ip(host) else host)
    try:
        dial: tuple[str, ...] = (host,)
        if policy is not None:
            admitted = admit(policy, host, port, resolve=resolve)
            if isinstance(admitted, Refusal):
                return ScanError(host, port, "forbidden", admitted.reason)
            dial = admitted
        with connect_first(dial, port, timeout) as raw:
            raw.settimeout(timeout)
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except socket.gaierror:
        return ScanError(host, port, "dns")
    except (TimeoutError, socket.timeout):
        return ScanError(host, port, "timeout")
    except ConnectionRefusedError:
        return ScanError(host, port, "refused")
    except ssl.SSLError as exc:
        return ScanError(host, port, "tls-error", exc.reason or type(exc).__name__)
    except OSError as exc:
        reason = "tls-error" if isinstance(exc, ConnectionResetError) else "unreachable"
        return ScanError(host, port, reason, type(exc).__name__)
    if not der:
        return ScanError(host, port, "no-certificate")
    try:
        return describe_der(der, f"tls:{_join(host, port)}")
    except (ValueError, Warning) as exc:
        return ScanError(host, port, "tls-error", f"unparseable certificate: "
                                                  f"{type(exc).__name__}")


def match_inventory(found: Iterable[FoundCertificate | ScanError],
                    known_fingerprints: dict[str, str], *,
                    expiring_within: dt.timedelta = DEFAULT_EXPIRING_WITHIN,
                    now: dt.datetime | None = None) -> list[Classified]:
    """Classify each found certificate against the inventory.

    ``known_fingerprints`` maps SHA-256 fingerprint (hex, any case, colons allowed) to the
    certificate id. ``ScanError`` entries are ignored, so the output of
    ``scan_endpoints`` can be passed as is. ``expiring_soon`` is true when ``not_after``
    falls within ``expiring_within`` of ``now`` (expired certificates included).
    """
    at = now or dt.datetime.now(dt.timezone.utc)
    known = {_norm_fp(fp): cert_id for fp, cert_id in known_fingerprints.items()}
    out: list[Classified] = []
    for item in found:
        if not isinstance(item, FoundCertificate):
            continue
        cert_id = known.get(_norm_fp(item.sha256_fingerprint))
        out.append(Classified(
            found=item, managed=cert_id is not None, certificate_id=cert_id,
            expiring_soon=item.not_after - at <= expiring_within,
            expired=item.not_after <= at))
    return out


def _context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _split(field: str, entry: str) -> tuple[str, str]:
    if entry.startswith("["):
        close = entry.find("]")
        if close < 0 or entry[close + 1:close + 2] != ":":
            raise InvalidInput(field, "expected '[ipv6]:port'")
        inner = entry[1:close]
        if ":" not in inner:
            raise InvalidInput(field, "brackets are for IPv6 addresses")
        return inner, entry[close + 2:]
    host, sep, ports = entry.rpartition(":")
    if not sep or not host:
        raise InvalidInput(field, "expected 'host:port'")
    if ":" in host:
        raise InvalidInput(field, "put IPv6 addresses in brackets: '[2001:db8::1]:443'")
    return host, ports


def _ports(field: str, text: str) -> list[int]:
    ports: list[int] = []
    for part in text.split(","):
        lo_text, dash, hi_text = part.strip().partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if dash else lo
        except ValueError:
            raise InvalidInput(field, "port must be a number or a range like 8000-8010") \
                from None
        if not (1 <= lo <= hi <= 65535):
            raise InvalidInput(field, "ports must be 1-65535 with the range low-high")
        ports.extend(range(lo, hi + 1))
        if len(ports) > 65535:
            break
    return list(dict.fromkeys(ports))


def _hosts(field: str, text: str) -> tuple[int, Iterable[str]]:
    """``(number of addresses, lazy iterable of host strings)``; counts before expanding."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InvalidInput(field, "not a valid CIDR range") from None
        count = net.num_addresses
        if net.version == 4 and net.prefixlen < 31:
            count -= 2
        elif net.version == 6 and net.prefixlen < 127:
            count -= 1  # hosts() leaves out the Subnet-Router anycast address
        return count, (str(a) for a in net.hosts())
    if _is_ip(text):
        return 1, (str(ipaddress.ip_address(text)),)
    return 1, (dns_name(field, text, allow_wildcard=False),)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _norm_fp(fp: str) -> str:
    return fp.replace(":", "").strip().lower()
