"""dns-01 by RFC 2136 dynamic update, signed with TSIG (RFC 8945).

Works with BIND, Knot, PowerDNS and any server that accepts signed updates. The server,
zone, key name and algorithm are settings; the TSIG secret is read from Vault
(``system/dns/<issuer>``, field ``secret``) when first needed and never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Mapping

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from ...errors import ConfigurationError, IssuanceFailed
from .base import Credentials

log = logging.getLogger(__name__)

ALGORITHMS = ("hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")
POLL_FIRST = 0.05
POLL_MAX = 2.0


@dataclasses.dataclass(frozen=True)
class Rfc2136Options:
    server: str
    zone: str
    key_name: str
    algorithm: str = "hmac-sha256"
    port: int = 53
    ttl: int = 60
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, issuer: str, options: Mapping[str, Any]) -> "Rfc2136Options":
        """:raises ConfigurationError: naming the missing or bad option."""
        where = f"issuers.{issuer}.dns"
        known = {f.name for f in dataclasses.fields(cls)} | {"provider"}
        unknown = set(options) - known
        if unknown:
            raise ConfigurationError(f"{where}: unknown options {sorted(unknown)}")
        for required in ("server", "zone", "key_name"):
            if not options.get(required):
                raise ConfigurationError(f"{where}.{required} is required for rfc2136")
        algorithm = str(options.get("algorithm") or "hmac-sha256").lower()
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(f"{where}.algorithm must be one of {ALGORITHMS}")
        try:
            port, ttl = int(options.get("port", 53)), int(options.get("ttl", 60))
            timeout = float(options.get("timeout", 10.0))
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: port, ttl and timeout must be numbers") from None
        if not 0 < port < 65536 or not 0 <= ttl <= 86400 or not 0 < timeout <= 120:
            raise ConfigurationError(f"{where}: port, ttl or timeout out of range")
        return cls(server=str(options["server"]), zone=str(options["zone"]),
                   key_name=str(options["key_name"]), algorithm=algorithm, port=port,
                   ttl=ttl, timeout=timeout)


class Rfc2136Provider:
    def __init__(self, options: Rfc2136Options, credentials: Credentials) -> None:
        self.options = options
        self._credentials = credentials
        self._zone = dns.name.from_text(options.zone)

    def present(self, fqdn: str, value: str) -> None:
        update = self._update()
        update.add(self._relative(fqdn), self.options.ttl, self._txt(value))
        self._send(update, f"add TXT at {fqdn}")

    def cleanup(self, fqdn: str, value: str) -> None:
        update = self._update()
        update.delete(self._relative(fqdn), self._txt(value))
        self._send(update, f"delete TXT at {fqdn}")

    def wait_propagated(self, fqdn: str, value: str, deadline: float) -> None:
        """Poll the primary server (the one updated) until it serves ``value``."""
        delay = POLL_FIRST
        while True:
            if value in self.served(fqdn):
                return
            if time.monotonic() + delay > deadline:
                raise IssuanceFailed(f"TXT at {fqdn} did not appear on {self.options.server}",
                                     acme_code="dns")
            time.sleep(delay)
            delay = min(delay * 1.6, POLL_MAX)

    def served(self, fqdn: str) -> list[str]:
        """The TXT strings the server answers for ``fqdn`` now."""
        query = dns.message.make_query(dns.name.from_text(fqdn), dns.rdatatype.TXT)
        try:
            answer = dns.query.udp(query, self.options.server, port=self.options.port,
                                   timeout=self.options.timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise IssuanceFailed(f"cannot query {self.options.server} for {fqdn}: "
                                 f"{type(exc).__name__}", acme_code="dns") from exc
        return [b"".join(rdata.strings).decode() for rrset in answer.answer
                if rrset.rdtype == dns.rdatatype.TXT for rdata in rrset]

    # -- internals -----------------------------------------------------------------------
    def _update(self) -> dns.update.UpdateMessage:
        creds = self._credentials()
        secret = creds.get("secret")
        if not secret or not isinstance(secret, str):
            raise IssuanceFailed("the TSIG secret for the dns-01 provider is missing from "
                                 "Vault (field 'secret')", acme_code="dns")
        try:
            key = dns.tsig.Key(self.options.key_name, secret, self.options.algorithm)
        except Exception as exc:  # a malformed base64 secret; never echo it
            raise IssuanceFailed("the TSIG secret in Vault is not valid base64",
                                 acme_code="dns", retryable=False) from exc
        update = dns.update.UpdateMessage(self._zone)
        update.use_tsig(key)
        return update

    def _relative(self, fqdn: str) -> dns.name.Name:
        name = dns.name.from_text(fqdn)
        if not name.is_subdomain(self._zone):
            raise IssuanceFailed(f"{fqdn} is outside the zone {self.options.zone} that "
                                 "the dns-01 provider updates", acme_code="dns",
                                 retryable=False)
        return name.relativize(self._zone)

    @staticmethod
    def _txt(value: str) -> dns.rdtypes.ANY.TXT.TXT:
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        server = f"{self.options.server}:{self.options.port}"
        try:
            response = dns.query.tcp(update, self.options.server, port=self.options.port,
                                     timeout=self.options.timeout)
        except dns.tsig.PeerError as exc:  # BADSIG, BADKEY, BADTIME from the server
            raise IssuanceFailed(f"{server} refused the TSIG signature ({type(exc).__name__})"
                                 f" to {what}", acme_code="dns", retryable=False) from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise IssuanceFailed(f"cannot {what} on {server}: {type(exc).__name__}",
                                 acme_code="dns") from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise IssuanceFailed(f"{server} answered {dns.rcode.to_text(rcode)} to {what}",
                                 acme_code="dns",
                                 retryable=rcode not in (dns.rcode.REFUSED, dns.rcode.NOTAUTH,
                                                         dns.rcode.NOTZONE))
        log.info("dns01.update", extra={"server": server, "change": what})
