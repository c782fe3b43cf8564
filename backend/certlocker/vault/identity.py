"""Service identities in Vault: one entity per service credential generation.

A service's JWT carries ``credential = <service>.<generation>``, the JWT role's
``user_claim``, so each generation logs in as its own entity alias. certlocker creates
the entity ``certlocker.<env>.<service>.g<generation>`` with metadata naming the service
*before* the first token of that generation exists; the templated service policy keys on
that metadata, which no login can change. Revoking a generation disables its entity:
Vault then refuses new logins with those JWTs and the Vault tokens already obtained with
them stop working, at once, while the next generation is unaffected.
"""

from __future__ import annotations

import hvac
import hvac.exceptions as hx

from ..paths import VaultPaths
from .client import translated


def entity_name(environment: str, service: str, generation: int) -> str:
    return f"certlocker.{environment}.{service}.g{generation}"


def alias_name(service: str, generation: int) -> str:
    return f"{service}.{generation}"


class ServiceIdentities:
    def __init__(self, client: hvac.Client, paths: VaultPaths) -> None:
        self._client = client
        self._paths = paths
        self._accessors: dict[str, str] = {}
        self._known: set[tuple[str, str, int]] = set()

    def accessor(self, environment: str) -> str:
        """The accessor of ``auth/certlocker-<env>`` (needs read on sys/auth)."""
        if environment not in self._accessors:
            mount = self._paths.auth_mount(environment) + "/"
            with translated("sys/auth"):
                methods = self._client.sys.list_auth_methods()["data"]
            if mount not in methods:
                from ..errors import ConfigurationError

                raise ConfigurationError(
                    f"auth mount {mount} is missing: run `certlocker bootstrap`")
            self._accessors[environment] = methods[mount]["accessor"]
        return self._accessors[environment]

    def ensure(self, environment: str, service: str, generation: int) -> None:
        """Create (or repair) the entity and alias for one generation. Idempotent."""
        key = (environment, service, generation)
        if key in self._known:
            return
        name = entity_name(environment, service, generation)
        metadata = {"certlocker_env": environment, "certlocker_service": service,
                    "certlocker_generation": str(generation)}
        with translated(f"identity/entity/name/{name}"):
            try:
                entity = self._client.secrets.identity.read_entity_by_name(name)["data"]
            except hx.InvalidPath:
                entity = None
            if entity is None:
                self._client.secrets.identity.create_or_update_entity_by_name(
                    name=name, metadata=metadata, disabled=False)
                entity = self._client.secrets.identity.read_entity_by_name(name)["data"]
            accessor = self.accessor(environment)
            alias = alias_name(service, generation)
            if not any(a["mount_accessor"] == accessor and a["name"] == alias
                       for a in entity.get("aliases") or []):
                self._client.secrets.identity.create_or_update_entity_alias(
                    name=alias, canonical_id=entity["id"], mount_accessor=accessor)
        self._known.add(key)

    def disable(self, environment: str, service: str, generation: int) -> bool:
        """Disable one generation's entity; True if it existed."""
        name = entity_name(environment, service, generation)
        self._known.discard((environment, service, generation))
        with translated(f"identity/entity/name/{name}"):
            try:
                entity = self._client.secrets.identity.read_entity_by_name(name)["data"]
            except hx.InvalidPath:
                return False
            if entity is None:
                return False
            self._client.secrets.identity.update_entity(
                entity_id=entity["id"], name=name, metadata=entity.get("metadata"),
                disabled=True)
        return True
