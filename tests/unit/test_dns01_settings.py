"""dns-01 issuer settings: provider options validated at start, secrets kept out."""

from __future__ import annotations

import pytest

from certlocker import settings
from certlocker.errors import ConfigurationError
from certlocker.issuance.dns import build_provider
from certlocker.issuance.dns.rfc2136 import Rfc2136Options, Rfc2136Provider

BASE = {"vault_addr": "http://127.0.0.1:8200", "vault_token": "t"}


def issuer(**conf: object) -> dict[str, object]:
    return {**BASE, "issuers": {"bind": {"directory_url": "https://ca.test/dir", **conf}}}


def test_dns01_issuer_from_the_environment_nests_provider_options() -> None:
    loaded = settings.load(None, {
        "CERTLOCKER_VAULT_ADDR": "http://127.0.0.1:8200", "CERTLOCKER_VAULT_TOKEN": "t",
        "CERTLOCKER_ISSUERS__BIND__DIRECTORY_URL": "https://ca.test/dir",
        "CERTLOCKER_ISSUERS__BIND__CHALLENGE": "dns-01",
        "CERTLOCKER_ISSUERS__BIND__DNS__PROVIDER": "rfc2136",
        "CERTLOCKER_ISSUERS__BIND__DNS__SERVER": "127.0.0.1",
        "CERTLOCKER_ISSUERS__BIND__DNS__PORT": "5353",
        "CERTLOCKER_ISSUERS__BIND__DNS__ZONE": "example.test",
        "CERTLOCKER_ISSUERS__BIND__DNS__KEY_NAME": "k",
    })
    conf = loaded.issuer("bind")
    provider = build_provider("bind", conf.dns, lambda: {})
    assert isinstance(provider, Rfc2136Provider) and provider.options.port == 5353


@pytest.mark.parametrize("conf,complaint", [
    ({"challenge": "dns-01"}, "dns.provider is required"),
    ({"challenge": "dns-01", "dns": {"provider": "rfc2136", "secret": "x"}},
     "secrets belong in Vault"),
    ({"dns": "rfc2136"}, "must be a table"),
], ids=["dns-01 without a provider", "a TSIG secret in settings", "dns not a table"])
def test_bad_dns_settings_fail_at_start(conf: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        settings.from_mapping(issuer(**conf))


@pytest.mark.parametrize("options,complaint", [
    ({"provider": "route53"}, "must be one of"),
    ({"provider": "rfc2136", "zone": "example.test", "key_name": "k"}, "server is required"),
    ({"provider": "rfc2136", "server": "s", "zone": "z", "key_name": "k",
      "algorithm": "hmac-md5"}, "algorithm must be one of"),
    ({"provider": "rfc2136", "server": "s", "zone": "z", "key_name": "k", "port": "x"},
     "must be numbers"),
    ({"provider": "rfc2136", "server": "s", "zone": "z", "key_name": "k", "colour": 1},
     "unknown options"),
])
def test_bad_provider_options(options: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        build_provider("bind", options, lambda: {})


def test_rfc2136_defaults() -> None:
    opts = Rfc2136Options.from_settings("bind", {"server": "s", "zone": "z", "key_name": "k"})
    assert (opts.port, opts.algorithm, opts.ttl) == (53, "hmac-sha256", 60)
