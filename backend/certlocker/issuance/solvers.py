"""Challenge strategies: how an authorization is proven (RFC 8555 section 8).

A solver publishes what the CA will check (``present``), returning a ``Presented``
whose ``settle`` waits until the CA can see it and whose ``cleanup`` removes it. The
issuer presents every pending authorization, settles them all, then answers.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Protocol

import josepy as jose
from acme import challenges, messages

from ..ports import ChallengeStore
from .dns import DnsProvider, WaitsForPropagation

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Presented:
    challb: messages.ChallengeBody
    cleanup: Callable[[], None]
    settle: Callable[[float], None] = lambda deadline: None


class Solver(Protocol):
    # Read-only: a solver's class attribute may name a narrower challenge type.
    @property
    def challenge_type(self) -> type[challenges.KeyAuthorizationChallenge]: ...

    @property
    def name(self) -> str: ...

    def present(self, challb: messages.ChallengeBody, identifier: str,
                account_key: jose.JWK) -> Presented: ...


class Http01Solver:
    """Key authorizations in shared storage, served by every replica's API."""

    challenge_type = challenges.HTTP01
    name = "http-01"

    def __init__(self, store: ChallengeStore) -> None:
        self._store = store

    def present(self, challb: messages.ChallengeBody, identifier: str,
                account_key: jose.JWK) -> Presented:
        _, validation = challb.response_and_validation(account_key)
        token = challb.chall.encode("token")
        self._store.put(token, validation)
        return Presented(challb, cleanup=lambda: self._store.delete(token))


class Dns01Solver:
    """A TXT record at ``_acme-challenge.<name>`` through a ``DnsProvider``; for
    ``*.example.com`` the CA checks ``_acme-challenge.example.com`` (section 8.4)."""

    challenge_type = challenges.DNS01
    name = "dns-01"

    def __init__(self, provider: DnsProvider) -> None:
        self._provider = provider

    def present(self, challb: messages.ChallengeBody, identifier: str,
                account_key: jose.JWK) -> Presented:
        chall = challb.chall
        assert isinstance(chall, challenges.DNS01)
        fqdn = chall.validation_domain_name(identifier)
        value = chall.validation(account_key)
        self._provider.present(fqdn, value)
        provider = self._provider

        def settle(deadline: float) -> None:
            if isinstance(provider, WaitsForPropagation):
                provider.wait_propagated(fqdn, value, deadline)

        return Presented(challb, cleanup=lambda: provider.cleanup(fqdn, value),
                         settle=settle)
