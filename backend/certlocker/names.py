"""Validation of every name that reaches a Vault path or a certificate.

certlocker validates names itself rather than relying on Vault: OpenBao 2.6+ refuses
rendered template names containing ``/``, ``+`` or ``*`` but older servers and Vault may
not, and a name becomes part of a path, an identity alias and a JWT ``sub``.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna
from publicsuffixlist import PublicSuffixList

from .errors import InvalidInput

# Environment, service and certificate names: one DNS-label-like token. No dots (the
# certificate id joins the three with dots), no slashes, no uppercase, no leading '_'.
COMPONENT_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
_COMPONENT = re.compile(COMPONENT_PATTERN)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: A last label that makes URL parsers read the host as an IPv4 address (the WHATWG URL
#: standard's "ends in a number": ``127.1`` and ``0x7f.1`` are 127.0.0.1 to a browser).
_NUMBER = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
MAX_DNS_NAME = 253
MAX_DNS_NAMES = 100


def component(field: str, value: object) -> str:
    """Return ``value`` if it is a valid environment/service/name component.

    :raises InvalidInput: naming ``field`` and why.
    """
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > 63:
        raise InvalidInput(field, "must be at most 63 characters")
    if not _COMPONENT.match(value):
        raise InvalidInput(
            field,
            "must be lowercase letters, digits and '-', starting and ending with a "
            "letter or digit (no '/', '.', '..', '%', spaces or control characters)",
        )
    return value


def dns_name(field: str, value: object, *, allow_wildcard: bool = True) -> str:
    """Normalise and validate one DNS name (RFC 1035 / RFC 5890 A-labels).

    Unicode (IDN) names are converted to A-labels with IDNA 2008 (UTS #46). A wildcard
    is allowed only as the whole leftmost label, and not on a single-label base.

    :raises InvalidInput: naming ``field`` and why.
    """
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    name = value.strip()
    if name != value or not name:
        raise InvalidInput(field, "must be a non-empty name without surrounding spaces")
    if name.endswith("."):
        name = name[:-1]
    if any(ch.isspace() for ch in name) or "\x00" in name:
        raise InvalidInput(field, "must not contain spaces or control characters")
    if _is_ip(name):
        raise InvalidInput(field, "is an IP address; put it in ip_addresses")
    wildcard = name.startswith("*.")
    if "*" in (name[2:] if wildcard else name):
        raise InvalidInput(field, "a wildcard is allowed only as the whole leftmost label")
    if wildcard and not allow_wildcard:
        raise InvalidInput(field, "wildcards need a dns-01 capable issuer")
    base = name[2:] if wildcard else name
    if not base.isascii():
        base = _to_alabels(field, base)
    base = base.lower()
    labels = base.split(".")
    if len(labels) < 2 and wildcard:
        raise InvalidInput(field, "a wildcard needs at least two labels under it")
    for label in labels:
        if not label:
            raise InvalidInput(field, "has an empty label")
        if len(label) > 63:
            raise InvalidInput(field, f"label '{label[:20]}…' is longer than 63 octets")
        if not _LABEL.match(label):
            raise InvalidInput(
                field,
                f"label '{label}' may hold only letters, digits and inner hyphens "
                "(no underscores)",
            )
    if _NUMBER.match(labels[-1]):
        # No TLD is a number (RFC 3696 section 2), and CAs refuse such names.
        raise InvalidInput(field, f"ends in the number '{labels[-1]}': URL parsers read "
                                  "such a name as an IPv4 address; put addresses in "
                                  "ip_addresses")
    full = ("*." if wildcard else "") + base
    if len(full) > MAX_DNS_NAME:
        raise InvalidInput(field, f"is longer than {MAX_DNS_NAME} octets")
    return full


def dns_names(field: str, value: object, *, allow_wildcard: bool = True) -> tuple[str, ...]:
    """Validate a non-empty list of DNS names; duplicates after normalisation are dropped."""
    if not isinstance(value, list) or not value:
        raise InvalidInput(field, "must be a non-empty list of DNS names")
    if len(value) > MAX_DNS_NAMES:
        raise InvalidInput(field, f"at most {MAX_DNS_NAMES} names")
    seen: dict[str, None] = {}
    for i, item in enumerate(value):
        seen[dns_name(f"{field}/{i}", item, allow_wildcard=allow_wildcard)] = None
    return tuple(seen)


def ip_address(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(field, "is not an IPv4 or IPv6 address") from None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _to_alabels(field: str, name: str) -> str:
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        raise InvalidInput(field, "is not a valid internationalised domain name") from None


def registered_domain(name: str) -> str:
    """The domain a CA's per-domain limit counts ``name`` under, as Let's Encrypt counts
    it: one label below its public suffix by the Public Suffix List, private entries
    included (``a.example.co.uk`` counts as ``example.co.uk``, ``me.github.io`` as
    itself); a wildcard's ``*.`` dropped. A name that is itself a public suffix counts
    as itself."""
    name = name.strip().rstrip(".").lower().removeprefix("*.")
    return _suffixes().privatesuffix(name) or name


@functools.cache
def _suffixes() -> PublicSuffixList:
    """The list the package bundles (no download): parsed once, on first use."""
    return PublicSuffixList()
