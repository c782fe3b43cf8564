"""The issuance boundary, as the issuers see it.

Issuers (ACME, Vault PKI) implement ``certlocker.ports.Issuer`` (and, when they can,
``Revoker`` and ``RenewalInfoSource``); the lifecycle gives them a ``Journal`` for the
in-flight state of one certificate and a ``ChallengeStore`` for http-01 answers, both
backed by Vault so any replica can resume or answer. The contracts and the records they
carry live in the domain (``certlocker.ports``, ``certlocker.models``) so the lifecycle
needs nothing from this package to use an issuer; they are named here too for the
issuers and their tests.
"""

from __future__ import annotations

from ..models import IssueRequest as IssueRequest
from ..models import RenewalWindow as RenewalWindow
from ..ports import ChallengeStore as ChallengeStore
from ..ports import Issuer as Issuer
from ..ports import IssuerSecrets as IssuerSecrets
from ..ports import Journal as Journal
from ..ports import RenewalInfoSource as RenewalInfoSource
from ..ports import Revoker as Revoker
from ..models import Inflight as Inflight
