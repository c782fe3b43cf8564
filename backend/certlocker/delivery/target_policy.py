"""Which endpoints certlocker may connect to: the administrator's target allow-list.

Verification, revocation checks and discovery scans open TCP connections to addresses
that operators name. Without a limit, a team operator could point a spec at an
internal TLS listener (Vault's own port on loopback) and read from its status whether
it answers and which certificate it serves. So every endpoint must fall inside an
allow-list of networks, ports and host-name patterns:

- its port is in ``ports``;
- an IP address lies in one of ``networks``;
- a host name matches one of ``hosts`` AND every address it resolves to (or every
  pinned pool address) lies in ``networks``, else DNS can point a permitted name at a
  forbidden address; the connection then goes to an address that was checked, never
  to a second resolution.

An empty allow-list permits nothing. Everything here is pure; name resolution is
passed in (``admit``), so the check and the dial agree on one answer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..models import Target

FORBIDDEN = "forbidden"
#: the keys of a policy, as in settings (``[targets]``) and the Vault document
KEYS = ("allowed_networks", "allowed_ports", "allowed_hosts")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

_PATTERN = re.compile(r"^(\*|(\*\.)?(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*)$")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why an endpoint may not be contacted: ``rule`` is ``port``, ``host``, ``network``
    (or ``address`` for one that does not parse); ``endpoint`` is the endpoint as it
    was named."""

    endpoint: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class TargetPolicy:
    networks: tuple[Network, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()  # inclusive ranges
    hosts: tuple[str, ...] = ()  # "*", "*.example.com" (any depth) or "exact.example.com"

    @classmethod
    def parse(cls, networks: Iterable[Any] = (), ports: Iterable[Any] = (),
              hosts: Iterable[Any] = ()) -> "TargetPolicy":
        """Build a policy from settings-style values (strings, or ints for ports).

        :raises ValueError: naming the key and the entry that is not valid.
        """
        return cls(tuple(_network(n) for n in networks), tuple(_port_range(p) for p in ports),
                   tuple(_pattern(h) for h in hosts))

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "TargetPolicy":
        """A policy from the administrator's Vault document: ``allowed_networks``,
        ``allowed_ports``, ``allowed_hosts``, each a list or a comma-separated string
        (what ``bao kv put key=value`` writes).

        :raises ValueError: an unknown key or an invalid entry.
        """
        unknown = set(doc) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; expected {list(KEYS)}")
        return cls.parse(*(_entries(doc.get(key)) for key in KEYS))

    def extended(self, other: "TargetPolicy") -> "TargetPolicy":
        """Everything either policy allows."""
        return TargetPolicy(_union(self.networks, other.networks),
                            _union(self.ports, other.ports), _union(self.hosts, other.hosts))

    def to_json(self) -> dict[str, list[Any]]:
        return {"allowed_networks": [str(n) for n in self.networks],
                "allowed_ports": [str(lo) if lo == hi else f"{lo}-{hi}"
                                  for lo, hi in self.ports],
                "allowed_hosts": list(self.hosts)}

    def port_allowed(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ports)

    def address_allowed(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip.version == n.version and ip in n
                                      for n in self.networks)

    def host_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        for pattern in self.hosts:
            if pattern == "*" or pattern == name or (
                    pattern.startswith("*.") and name.endswith(pattern[1:])):
                return True
        return False


def check(policy: TargetPolicy, host: str, port: int,
          addresses: Iterable[str] = ()) -> Refusal | None:
    """The static rules for ``host:port``: the port, the host (an IP against the
    networks, a name against the host patterns) and each of ``addresses`` (pinned pool
    nodes or resolved addresses) against the networks. None when allowed."""
    endpoint = _join(host, port)
    if not policy.port_allowed(port):
        return Refusal(endpoint, "port", f"port {port} is not in the allowed ports")
    if _ip(host) is None:
        if not policy.host_allowed(host):
            return Refusal(endpoint, "host", f"host {host} matches no allowed host pattern")
    else:
        addresses = (host, *addresses)
    for address in addresses:
        if not policy.address_allowed(address):
            return Refusal(endpoint, "network",
                           f"address {address} is outside the allowed networks")
    return None


def check_target(policy: TargetPolicy, target: Target) -> Refusal | None:
    """``check`` for a spec target (its pool ``ips`` included), without resolving names:
    what a declaration can be refused for. A name's addresses are checked by ``admit``
    at every connection, since DNS may change after the spec is declared."""
    try:
        host, port = split_address(target.address)
    except ValueError:
        return Refusal(target.address[:100], "address", "not a host:port address")
    refusal = check(policy, host, port, target.ips)
    return dataclasses.replace(refusal, endpoint=target.address) if refusal else None


def admit(policy: TargetPolicy, host: str, port: int, *, pinned: str | None = None,
          resolve: Resolver) -> tuple[str, ...] | Refusal:
    """The addresses to dial for ``host:port``, every one checked, or why none may be.

    ``pinned`` (a pool node) is dialled instead of resolving the host. A name is
    resolved only once its port and pattern are allowed, and every address it resolves
    to must be allowed: a name that also points somewhere forbidden is refused whole.

    :raises OSError: when the name does not resolve (``socket.gaierror``).
    """
    if pinned is not None:
        refusal = check(policy, host, port, (pinned,))
        return refusal or (pinned,)
    refusal = check(policy, host, port)
    if refusal is not None:
        return refusal
    if _ip(host) is not None:
        return (str(_ip(host)),)
    addresses = tuple(dict.fromkeys(resolve(host, port)))
    if not addresses:
        raise socket.gaierror(f"{host} resolves to no address")
    return check(policy, host, port, addresses) or addresses


def system_resolver(host: str, port: int) -> tuple[str, ...]:
    """Every TCP address of ``host`` from the system resolver, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def connect_first(candidates: Sequence[str], port: int, timeout: float) -> socket.socket:
    """A TCP connection to the first of ``candidates`` (addresses already checked) that
    accepts one, as ``socket.create_connection`` tries a name's addresses in turn.

    :raises OSError: the last failure, when none accepts."""
    error: OSError | None = None
    for host in candidates:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to (host, port); a bare host gets port 443 (as
    ``delivery.verify.split_address``, which uses this).

    :raises ValueError: if the port is not a number in 1..65535 or the host is empty.
    """
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {address[:100]!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""  # a bare host or IPv6 address
    if not host:
        raise ValueError(f"invalid address {address[:100]!r}")
    if not port_text:
        return host, 443
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {address[:100]!r}")
    return host, int(port_text)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _entries(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError("each key must be a list or a comma-separated string")


def _network(value: Any) -> Network:
    try:
        return ipaddress.ip_network(str(value).strip())
    except ValueError as exc:
        raise ValueError(f"allowed_networks: {str(value)[:100]!r} is not a network "
                         f"({exc})") from None


def _port_range(value: Any) -> tuple[int, int]:
    text = str(value).strip() if not isinstance(value, bool) else ""
    lo_text, dash, hi_text = text.partition("-")
    if lo_text.isdigit() and (not dash or hi_text.isdigit()):
        lo, hi = int(lo_text), int(hi_text) if dash else int(lo_text)
        if 1 <= lo <= hi <= 65535:
            return lo, hi
    raise ValueError(f"allowed_ports: {str(value)[:100]!r} is not a port or a range "
                     "like 8000-8999 within 1-65535")


def _pattern(value: Any) -> str:
    text = str(value).strip().lower().rstrip(".")
    if not isinstance(value, str) or not _PATTERN.match(text) or len(text) > 253:
        raise ValueError(f"allowed_hosts: {str(value)[:100]!r} is not '*', a host name or "
                         "'*.' and a domain")
    return text


def _union(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(a + b))
