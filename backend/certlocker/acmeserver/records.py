"""Accounts and orders of the ACME server, as JSON records in Vault.

``system/acme-server/accounts/<env>/<id>`` holds an account (its public key, the service
and binding it belongs to, and the credential generation it was made under: when the
service's credentials are revoked the generation moves on and the account stops);
``account-keys/<thumbprint>`` finds an account by key; ``orders/<env>/<account>/<id>``
holds an order (its authorizations are derived from it); ``serials/<serial>`` names the
certificate and order of every serial issued through the server (for ARI and revocation).
Only public facts: no key, no HMAC key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

from ..clock import parse_rfc3339, rfc3339
from ..errors import Conflict
from ..models import CertificateRef
from ..ports import Store


class AccountStatus(enum.StrEnum):
    VALID = "valid"
    DEACTIVATED = "deactivated"


class OrderStatus(enum.StrEnum):
    READY = "ready"
    PROCESSING = "processing"
    VALID = "valid"
    INVALID = "invalid"


@dataclasses.dataclass(frozen=True)
class Account:
    id: str
    environment: str
    service: str
    key: dict[str, Any]  # the public JWK
    thumbprint: str
    eab_kid: str
    generation: int
    created_at: dt.datetime
    status: AccountStatus = AccountStatus.VALID
    contact: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "environment": self.environment, "service": self.service,
                "key": self.key, "thumbprint": self.thumbprint, "eab_kid": self.eab_kid,
                "generation": self.generation, "created_at": rfc3339(self.created_at),
                "status": self.status.value, "contact": list(self.contact)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Account":
        return cls(id=data["id"], environment=data["environment"], service=data["service"],
                   key=data["key"], thumbprint=data["thumbprint"], eab_kid=data["eab_kid"],
                   generation=int(data["generation"]),
                   created_at=parse_rfc3339(data["created_at"]),
                   status=AccountStatus(data.get("status", "valid")),
                   contact=tuple(data.get("contact") or ()))


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    account: str
    environment: str
    service: str
    certificate: str  # the certificate name (``acme-...``) under the service
    dns_names: tuple[str, ...]
    created_at: dt.datetime
    expires: dt.datetime
    status: OrderStatus = OrderStatus.READY
    replaces: str | None = None
    finalized_at: dt.datetime | None = None
    serial: str | None = None
    fullchain: str | None = dataclasses.field(default=None, repr=False)
    error: dict[str, Any] | None = None
    deactivated: tuple[int, ...] = ()  # authorizations the client deactivated

    @property
    def ref(self) -> CertificateRef:
        return CertificateRef(self.environment, self.service, self.certificate)

    def replace(self, **changes: Any) -> "Order":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "account": self.account, "environment": self.environment,
                "service": self.service, "certificate": self.certificate,
                "dns_names": list(self.dns_names), "created_at": rfc3339(self.created_at),
                "expires": rfc3339(self.expires), "status": self.status.value,
                "replaces": self.replaces,
                "finalized_at": rfc3339(self.finalized_at) if self.finalized_at else None,
                "serial": self.serial, "fullchain": self.fullchain, "error": self.error,
                "deactivated": list(self.deactivated)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Order":
        finalized = data.get("finalized_at")
        return cls(id=data["id"], account=data["account"], environment=data["environment"],
                   service=data["service"], certificate=data["certificate"],
                   dns_names=tuple(data["dns_names"]),
                   created_at=parse_rfc3339(data["created_at"]),
                   expires=parse_rfc3339(data["expires"]), status=OrderStatus(data["status"]),
                   replaces=data.get("replaces"),
                   finalized_at=parse_rfc3339(finalized) if finalized else None,
                   serial=data.get("serial"), fullchain=data.get("fullchain"),
                   error=data.get("error"),
                   deactivated=tuple(int(i) for i in data.get("deactivated") or ()))


@dataclasses.dataclass(frozen=True)
class Issued:
    """``serials/<serial>``: a certificate issued through the ACME server."""

    serial: str
    environment: str
    service: str
    certificate: str
    account: str
    order: str
    not_before: dt.datetime
    not_after: dt.datetime

    @property
    def ref(self) -> CertificateRef:
        return CertificateRef(self.environment, self.service, self.certificate)

    def to_json(self) -> dict[str, Any]:
        return {"serial": self.serial, "environment": self.environment,
                "service": self.service, "certificate": self.certificate,
                "account": self.account, "order": self.order,
                "not_before": rfc3339(self.not_before), "not_after": rfc3339(self.not_after)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Issued":
        return cls(serial=data["serial"], environment=data["environment"],
                   service=data["service"], certificate=data["certificate"],
                   account=data["account"], order=data["order"],
                   not_before=parse_rfc3339(data["not_before"]),
                   not_after=parse_rfc3339(data["not_after"]))


class Records:
    """Reads and check-and-set writes of the records above."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._paths = store.paths

    # -- accounts --------------------------------------------------------------------------
    def account(self, environment: str, account_id: str) -> tuple[Account | None, int]:
        document, version = self._store.read_json(
            self._paths.acme_client_account(environment, account_id))
        return (Account.from_json(document) if document else None), version

    def account_by_key(self, thumbprint: str) -> Account | None:
        document, _ = self._store.read_json(self._paths.acme_account_key(thumbprint))
        if not document:
            return None
        found, _ = self.account(document["environment"], document["account"])
        return found

    def create_account(self, account: Account) -> Account:
        """File the key first (create-only), then the account: a key registered twice at
        once makes one account; the loser gets the winner's.

        :raises Conflict: the key belongs to an account being created right now."""
        try:
            self._store.write_json(self._paths.acme_account_key(account.thumbprint),
                                   {"environment": account.environment,
                                    "account": account.id}, cas=0)
        except Conflict:
            winner = self.account_by_key(account.thumbprint)
            if winner is None:
                raise
            return winner
        self._store.write_json(self._paths.acme_client_account(account.environment,
                                                               account.id),
                               account.to_json(), cas=0)
        return account

    def save_account(self, account: Account, version: int) -> int:
        return self._store.write_json(self._paths.acme_client_account(
            account.environment, account.id), account.to_json(), cas=version)

    def move_key(self, account: Account, old_thumbprint: str) -> None:
        """Point the new key's index at the account (create-only) and drop the old one.

        :raises Conflict: another account has the new key."""
        self._store.write_json(self._paths.acme_account_key(account.thumbprint),
                               {"environment": account.environment, "account": account.id},
                               cas=0)
        self._store.destroy(self._paths.acme_account_key(old_thumbprint))

    # -- orders ----------------------------------------------------------------------------
    def order(self, environment: str, account_id: str,
              order_id: str) -> tuple[Order | None, int]:
        document, version = self._store.read_json(
            self._paths.acme_order(environment, account_id, order_id))
        return (Order.from_json(document) if document else None), version

    def save_order(self, order: Order, version: int) -> int:
        return self._store.write_json(
            self._paths.acme_order(order.environment, order.account, order.id),
            order.to_json(), cas=version)

    def order_ids(self, environment: str, account_id: str) -> list[str]:
        return [name for name in self._store.list(
            self._paths.acme_orders_dir(environment, account_id)) if not name.endswith("/")]

    # -- serials ---------------------------------------------------------------------------
    def file_serial(self, issued: Issued) -> None:
        try:
            self._store.write_json(self._paths.acme_serial(issued.serial), issued.to_json(),
                                   cas=0)
        except Conflict:
            pass  # filed already (two pollers of one order)

    def issued(self, serial: str) -> Issued | None:
        document, _ = self._store.read_json(self._paths.acme_serial(serial))
        return Issued.from_json(document) if document else None
