"""Every real adapter and every fake in tests/support satisfies the port it stands in for.

Twice over: mypy checks this module (``[tool.mypy] files``), so each annotated
assignment below fails the type check when an implementation drifts from its port in
a name or a signature; the tests check the same pairs at run time with ``isinstance`` /
``issubclass`` (``runtime_checkable`` ports see names, not signatures), and pin the
optional capabilities the lifecycle branches on.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, NoReturn, get_args, get_type_hints

import pytest
from typing_extensions import get_protocol_members, is_protocol

from certlocker import ports
from certlocker.credentials.service import CredentialService
from certlocker.delivery.target_policy import TargetPolicy
from certlocker.delivery.verify import under_policy, verify_targets
from certlocker.issuance.acme_issuer import AcmeIssuer
from certlocker.issuance.vault_pki import VaultPkiIssuer
from certlocker.lifecycle import ports as lifecycle_ports
from certlocker.lifecycle.records.issuer_secrets import StoreIssuerSecrets
from certlocker.lifecycle.local_challenges import LocalFirstChallenges
from certlocker.lifecycle.retirement import RetirementService
from certlocker.lifecycle.replacements import ReplacementService
from certlocker.lifecycle.revocation import RevocationService
from certlocker.lifecycle.service import CertificateService
from certlocker.lifecycle.records.vault_adapters import StoreAccounts, StoreChallenges, StoreJournal
from certlocker.lifecycle.verification import Verifier
from certlocker.metrics.collector import IssuanceMetrics
from certlocker.models import CertificateRef
from certlocker.notify import Notifier
from certlocker.paths import VaultPaths
from certlocker.settings import IssuerSettings
from certlocker.vault.store import VaultStore
from tests.support.acme_helpers import Http01Responder, MemoryAccounts, MemoryJournal
from tests.support.fake_acme import FakeAcme
from tests.support.memory_issuer import MemoryIssuer
from tests.support.memory_store import MemoryStore
from tests.support.pools import certificate_pools, threads

# -- checked by mypy: implementation classes against their ports -------------------------
# storage
vault_store: type[ports.Store] = VaultStore
vault_versions: type[ports.VersionedStore] = VaultStore
vault_caller: type[ports.CallerStore] = VaultStore
vault_operator: type[ports.OperatorStore] = VaultStore
vault_lister: type[ports.Lister] = VaultStore
vault_specs: type[ports.SpecSource] = VaultStore
memory_store: type[ports.Store] = MemoryStore
memory_caller: type[ports.CallerStore] = MemoryStore
memory_specs: type[ports.SpecSource] = MemoryStore
# what an issuer gets from storage
store_journal: type[ports.Journal] = StoreJournal
memory_journal: type[ports.Journal] = MemoryJournal
store_challenges: type[ports.SharedChallenges] = StoreChallenges
local_challenges: type[ports.ChallengeStore] = LocalFirstChallenges
memory_challenges: type[ports.ChallengeStore] = Http01Responder
store_accounts: type[ports.AccountStore] = StoreAccounts
memory_accounts: type[ports.AccountStore] = MemoryAccounts
store_secrets: type[ports.IssuerSecrets] = StoreIssuerSecrets
# issuers and their optional capabilities
acme_issuer: type[ports.Issuer] = AcmeIssuer
acme_revoker: type[ports.Revoker] = AcmeIssuer
acme_renewal_info: type[ports.RenewalInfoSource] = AcmeIssuer
pki_issuer: type[ports.Issuer] = VaultPkiIssuer
memory_issuer: type[ports.Issuer] = MemoryIssuer
# credentials, notifiers
credentials: type[ports.Credentials] = CredentialService
notifier: type[ports.AlertSink] = Notifier
issuance_metrics: type[ports.IssuanceObserver] = IssuanceMetrics
# the lifecycle's parts, for one another
certificates: type[lifecycle_ports.CertificateIssuing] = CertificateService
renewal_refresher: type[lifecycle_ports.RenewalInfoRefresher] = CertificateService
replacements: type[lifecycle_ports.ReplacementIssuing] = CertificateService
verifier: type[lifecycle_ports.Verifying] = Verifier
revocations: type[lifecycle_ports.FollowingUp] = RevocationService
retirements: type[lifecycle_ports.FollowingUpAll] = RetirementService
mass_replacements: type[lifecycle_ports.AdvancingAll] = ReplacementService
# probes (callables: checked by mypy only)
probe: ports.Probe = functools.partial(verify_targets, pool=threads(1, "verify"))
policed_probe: ports.Probe = under_policy(TargetPolicy, threads(1, "verify"))

REF = CertificateRef("prod", "payments", "www")


def declared() -> list[tuple[str, Any, type]]:
    """(name, port, implementation) for each ``type[Port]`` assignment above."""
    hints = get_type_hints(sys.modules[__name__])
    out = []
    for name, hint in hints.items():
        args = get_args(hint)
        if args and isinstance(args[0], type):
            out.append((name, args[0], globals()[name]))
    return out


def test_every_port_of_the_domain_is_checked_against_an_implementation() -> None:
    """A port added to ``certlocker.ports`` or ``lifecycle.ports`` without an
    implementation checked here fails: the table above lists every port, not a sample."""
    checked = {port for _, port, _ in declared()}
    declared_ports = {obj for module in (ports, lifecycle_ports)
                      for obj in vars(module).values()
                      if is_protocol(obj) and obj.__module__ == module.__name__}
    assert {p.__name__ for p in declared_ports - checked} == {"Probe"}  # a callable: mypy


@pytest.mark.parametrize("name, port, implementation",
                         [pytest.param(*row, id=row[0]) for row in declared()])
def test_each_implementation_has_every_method_of_its_port(name: str, port: Any,
                                                          implementation: type) -> None:
    methods = [m for m in _members(port) if callable(getattr(port, m, None))]
    assert [m for m in methods if not callable(getattr(implementation, m, None))] == []
    if all(callable(getattr(port, m, None)) for m in _members(port)):
        assert issubclass(implementation, port)


def _members(port: Any) -> list[str]:
    return sorted(get_protocol_members(port))


# -- instances: data members too, and the optional capabilities ----------------------------

def test_the_stores_satisfy_their_ports_with_their_data() -> None:
    memory = MemoryStore()
    for port in (ports.Store, ports.CallerStore, ports.SpecSource):
        assert isinstance(memory, port), port.__name__
    vault = VaultStore(None, VaultPaths(), adapter=_adapter())
    for vault_port in (ports.Store, ports.VersionedStore, ports.CallerStore,
                       ports.OperatorStore, ports.Lister, ports.SpecSource):
        assert isinstance(vault, vault_port), vault_port.__name__
    assert not isinstance(memory, ports.VersionedStore)  # the fake keeps no version data
    assert isinstance(StoreJournal(memory, REF), ports.Journal)
    assert isinstance(StoreChallenges(memory), ports.SharedChallenges)
    assert isinstance(LocalFirstChallenges(StoreChallenges(memory)), ports.ChallengeStore)


def test_only_the_acme_issuer_revokes_and_answers_renewal_info() -> None:
    """Revocation, retirement and ARI branch on these answers (``isinstance``)."""
    ca = FakeAcme()
    acme = AcmeIssuer(IssuerSettings(name="fake", directory_url=ca.directory_url),
                      MemoryAccounts(), Http01Responder(), transport=ca)
    pki = VaultPkiIssuer(IssuerSettings(name="pki", type="vault-pki"), _NoSigner())
    memory = MemoryIssuer()
    assert [isinstance(i, ports.Issuer) for i in (acme, pki, memory)] == [True, True, True]
    assert [isinstance(i, ports.Revoker) for i in (acme, pki, memory)] == [True, False, False]
    assert [isinstance(i, ports.RenewalInfoSource)
            for i in (acme, pki, memory)] == [True, False, False]


def test_the_certificate_service_refreshes_renewal_info() -> None:
    service = CertificateService(MemoryStore(), {"test": MemoryIssuer()},
                                 pools=certificate_pools(1))
    try:
        assert isinstance(service, lifecycle_ports.RenewalInfoRefresher)
    finally:
        service.shutdown()


class _NoSigner:
    def sign(self, csr_pem: str, ttl: str | None = None,
             common_name: str | None = None) -> NoReturn:
        raise AssertionError("nothing is signed here")


def _adapter() -> Any:
    from certlocker.vault.client import RetryingAdapter
    return RetryingAdapter(base_uri="http://127.0.0.1:9", token="unused")
