"""Issuer secrets (EAB, dns-01 provider credentials) read from Vault through a ``Store``.

Operators write them with their own token, e.g.
``bao kv put certlocker/system/acme/eab/zerossl kid=... hmac_key=...`` or
``bao kv put certlocker/system/dns/internal secret=<TSIG secret>``.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...errors import IssuanceFailed
from ..ports import Store


class StoreIssuerSecrets:
    def __init__(self, store: Store, issuer: str) -> None:
        self._store = store
        self._issuer = issuer

    def eab(self) -> Mapping[str, Any] | None:
        doc, _ = self._store.read_json(self._store.paths.acme_eab(self._issuer))
        return doc or None

    def dns(self) -> Mapping[str, Any]:
        """:raises IssuanceFailed: naming the Vault path when nothing is stored there."""
        path = self._store.paths.dns_credentials(self._issuer)
        doc, _ = self._store.read_json(path)
        if not doc:
            raise IssuanceFailed(f"no dns-01 credentials in Vault at {self._store.paths.mount}"
                                 f"/{path} for issuer {self._issuer}", acme_code="dns")
        return doc
