"""dns-01 providers, chosen by an issuer's ``dns.provider`` setting.

Add a cloud provider as a module here implementing ``base.DnsProvider`` and a line in
``PROVIDERS``. Options come from settings; secrets from ``credentials`` (Vault).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ...errors import ConfigurationError
from .base import Credentials, DnsProvider, WaitsForPropagation

__all__ = ["Credentials", "DnsProvider", "WaitsForPropagation", "build_provider"]


def _rfc2136(issuer: str, options: Mapping[str, Any], credentials: Credentials) -> DnsProvider:
    from .rfc2136 import Rfc2136Options, Rfc2136Provider

    return Rfc2136Provider(Rfc2136Options.from_settings(issuer, options), credentials)


PROVIDERS: dict[str, Callable[[str, Mapping[str, Any], Credentials], DnsProvider]] = {
    "rfc2136": _rfc2136,
}


def build_provider(issuer: str, options: Mapping[str, Any],
                   credentials: Credentials) -> DnsProvider:
    """The provider ``options["provider"]`` names, configured from ``options``.

    :raises ConfigurationError: for an unknown provider or a bad option.
    """
    kind = str(options.get("provider") or "")
    factory = PROVIDERS.get(kind)
    if factory is None:
        raise ConfigurationError(f"issuers.{issuer}.dns.provider must be one of "
                                 f"{sorted(PROVIDERS)}, got {kind!r}")
    return factory(issuer, options, credentials)
