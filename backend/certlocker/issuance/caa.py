"""CAA (RFC 8659) checked before ordering, so a refusal fails fast and clearly.

The decision is pure: ``relevant_rrset`` walks from a name towards the root through a
``lookup`` callable, and ``refusal`` tells whether that RRset permits one of the CA's
issuer domain names. ``DnsCaaLookup`` is the edge that asks a resolver (dnspython).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import dns.exception
import dns.name
import dns.resolver

from ..errors import IssuanceFailed

#: Tags this implementation understands (RFC 8659 section 4, RFC 8657 parameters are
#: read from issue values). A critical record with any other tag forbids issuance.
KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "contactemail", "contactphone"})
CRITICAL = 0x80


@dataclasses.dataclass(frozen=True)
class CaaRecord:
    flags: int
    tag: str
    value: str

    def __str__(self) -> str:
        return f'{self.flags} {self.tag} "{self.value}"'


Lookup = Callable[[str], Sequence[CaaRecord]]


def relevant_rrset(name: str, lookup: Lookup) -> tuple[str, Sequence[CaaRecord]] | None:
    """The first non-empty CAA RRset from ``name`` up to (not including) the root
    (RFC 8659 section 3), as ``(owner, records)``; None when there is none.

    A wildcard ``*.example.com`` is looked up from ``example.com``.
    """
    labels = name.rstrip(".").lower().split(".")
    if labels[0] == "*":
        labels = labels[1:]
    for i in range(len(labels)):
        owner = ".".join(labels[i:])
        records = lookup(owner)
        if records:
            return owner, records
    return None


def _parse_issue_value(value: str) -> tuple[str, dict[str, str]] | None:
    """``issuer-domain-name; key=value; ...`` -> (domain, params); None if malformed.
    An empty domain (``";"``) permits no CA."""
    domain, *params = value.split(";")
    domain = domain.strip().lower().rstrip(".")
    parsed: dict[str, str] = {}
    for param in params:
        param = param.strip()
        if not param:
            continue
        key, sep, val = param.partition("=")
        if not sep or not key.strip().isalnum():
            return None
        parsed[key.strip().lower()] = val.strip()
    if domain and not all(label and all(c.isalnum() or c == "-" for c in label)
                          for label in domain.split(".")):
        return None
    return domain, parsed


def refusal(records: Sequence[CaaRecord], identities: Iterable[str], *, wildcard: bool,
            account_uri: str | None = None, method: str | None = None) -> str | None:
    """Why ``records`` (a relevant RRset) forbid issuance by a CA known as any of
    ``identities``, or None when they permit it.

    - an unknown tag with the critical flag forbids (section 4.1);
    - for a wildcard, ``issuewild`` records rule when there are any, else ``issue``
      (section 4.3); for other names ``issue`` rules (section 4.2);
    - no ruling record at all permits;
    - a record permits only if its domain is one of ``identities`` and, when it names
      them, ``accounturi`` and ``validationmethods`` (RFC 8657) match ours.
    """
    for record in records:
        if record.flags & CRITICAL and record.tag.lower() not in KNOWN_TAGS:
            return f"critical CAA record {record} has a tag this CA does not understand"
    ours = {i.lower().rstrip(".") for i in identities}
    tags = {r.tag.lower() for r in records}
    tag = "issuewild" if wildcard and "issuewild" in tags else "issue"
    ruling = [r for r in records if r.tag.lower() == tag]
    if not ruling:
        return None
    for record in ruling:
        parsed = _parse_issue_value(record.value)
        if parsed is None:
            continue
        domain, params = parsed
        if domain not in ours:
            continue
        if account_uri and "accounturi" in params and params["accounturi"] != account_uri:
            continue
        if method and "validationmethods" in params and method not in [
                m.strip() for m in params["validationmethods"].split(",")]:
            continue
        return None
    shown = ", ".join(str(r) for r in ruling)
    return f"CAA {tag} records [{shown}] permit none of {sorted(ours)}"


def check(dns_names: Iterable[str], identities: Sequence[str], lookup: Lookup, *,
          account_uri: str | None = None, method: str | None = None) -> None:
    """Check every name; do nothing when ``identities`` is empty (the CA's CAA names are
    unknown, so the CA's own check is the only one).

    :raises IssuanceFailed: (``acme_code="caa"``, not retryable) naming the name, the
        owner of the relevant RRset and its records, for the first name refused.
    """
    if not identities:
        return
    for name in dns_names:
        found = relevant_rrset(name, lookup)
        if found is None:
            continue
        owner, records = found
        reason = refusal(records, identities, wildcard=name.startswith("*."),
                         account_uri=account_uri, method=method)
        if reason:
            raise IssuanceFailed(f"{name}: {reason} (CAA at {owner})", acme_code="caa",
                                 retryable=False)


class DnsCaaLookup:
    """CAA records of one owner name from a resolver: ``address`` is ``host[:port]``, or
    None for the system's resolvers. CNAMEs are followed by the resolver."""

    def __init__(self, address: str | None = None, timeout: float = 5.0) -> None:
        self._resolver = dns.resolver.Resolver(configure=address is None)
        if address is not None:
            host, _, port = address.rpartition(":") if address.count(":") == 1 else (
                address, "", "")
            self._resolver.nameservers = [host or address]
            if port:
                self._resolver.port = int(port)
        self._resolver.lifetime = timeout

    def __call__(self, owner: str) -> list[CaaRecord]:
        """:raises IssuanceFailed: (``acme_code="dns"``, retryable) when the lookup fails
        for another reason than "no such name" or "no CAA records": RFC 8659 section 3
        lets a CA refuse then, so certlocker does not guess."""
        try:
            answer = self._resolver.resolve(dns.name.from_text(owner), "CAA",
                                            raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.DNSException, OSError) as exc:
            raise IssuanceFailed(f"CAA lookup for {owner} failed: {type(exc).__name__}",
                                 acme_code="dns") from exc
        if answer.rrset is None:
            return []
        return [CaaRecord(r.flags, r.tag.decode(errors="replace"),
                          r.value.decode(errors="replace")) for r in answer.rrset]
