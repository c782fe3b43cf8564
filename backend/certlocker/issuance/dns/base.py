"""The dns-01 boundary: what a DNS provider does for a challenge.

A provider publishes and removes one TXT value at one name. ``present`` adds the value
beside any others at that name (a wildcard and its base name share
``_acme-challenge.<name>`` with different values, RFC 8555 section 8.4), and
``cleanup`` removes exactly that value. Providers whose writes take time to reach the
authoritative servers also implement ``wait_propagated``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, runtime_checkable

#: Reads the provider's secrets from Vault when first needed.
#: :raises IssuanceFailed: when they are not there.
Credentials = Callable[[], Mapping[str, Any]]


class DnsProvider(Protocol):
    def present(self, fqdn: str, value: str) -> None:
        """Add TXT ``value`` at ``fqdn``. :raises IssuanceFailed: (``acme_code="dns"``)"""
        ...

    def cleanup(self, fqdn: str, value: str) -> None:
        """Remove TXT ``value`` at ``fqdn``; absent is fine. :raises IssuanceFailed:"""
        ...


@runtime_checkable
class WaitsForPropagation(Protocol):
    def wait_propagated(self, fqdn: str, value: str, deadline: float) -> None:
        """Return once ``value`` is served at ``fqdn``.

        :raises IssuanceFailed: if it is not by ``deadline`` (``time.monotonic()``).
        """
        ...
