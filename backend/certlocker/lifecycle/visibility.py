"""Which declared certificates a caller may list, when their token cannot list the
whole inventory.

A team operator's policy (``policies/operator-team-payments.hcl``) grants ``list`` on
``metadata/specs/+/payments-*`` only: listing ``specs/`` or ``specs/<env>/`` is refused,
so walking the tree with the caller's token alone finds nothing. Where the caller may
not list a level, the folders below it are listed with certlocker's own token (folder
names of environments and services, no certificate data), and Vault is asked in one
``sys/capabilities-self`` call per batch which of those service folders the caller may
list. Each permitted folder is then listed with the caller's own token and every
certificate read with it, so Vault still decides what the caller sees.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

from ..errors import AccessDenied
from ..models import CertificateRef
from ..ports import Lister

#: the caller's token listed every level itself
ALL = "all"
#: some level was refused: only the service folders Vault lets the caller list
PERMITTED = "permitted"
PROBE_BATCH = 200


@dataclasses.dataclass(frozen=True)
class Listing:
    """``refs`` (lazy, in path order) and how they were found: ``scope`` is ``ALL`` or
    ``PERMITTED``; ``folders`` counts the service folders the caller may list
    (``None`` with ``ALL``: not counted), so a screen can tell "nothing declared
    here" from "nothing you may see"."""

    refs: Iterable[CertificateRef]
    scope: str
    folders: int | None = None
    #: with ``PERMITTED``: the (environment, service) folders the caller may list
    allowed: frozenset[tuple[str, str]] | None = None

    def may_list(self, ref: CertificateRef) -> bool:
        """Whether ``ref`` lies in a folder this listing covers (retired certificates,
        listed apart, are offered only where the caller may list)."""
        return self.allowed is None or (ref.environment, ref.service) in self.allowed


def listable(caller: Lister, own: Lister, environment: str | None = None,
             service: str | None = None) -> Listing:
    """The declared certificates ``caller`` may list.

    With both ``environment`` and ``service`` given, that folder is listed with the
    caller's token alone.

    :raises AccessDenied: only when the caller named a service folder it may not list.
    """
    paths = caller.paths
    if environment and service:
        return Listing(_names(caller, [(environment, service)], strict=True), ALL)
    scope = ALL
    if environment:
        envs = [environment]
    else:
        try:
            envs = _folders(caller.list(paths.specs_dir()))
        except AccessDenied:
            scope, envs = PERMITTED, _folders(own.list(paths.specs_dir()))
    folders: list[tuple[str, str]] = []
    for env in envs:
        try:
            services = _folders(caller.list(paths.specs_dir(env)))
        except AccessDenied:
            scope = PERMITTED
            services = _permitted(caller, env, _folders(own.list(paths.specs_dir(env))))
        folders.extend((env, s) for s in services if service is None or s == service)
    if scope == ALL:
        return Listing(_names(caller, folders, strict=False), scope)
    return Listing(_names(caller, folders, strict=False), scope, len(folders),
                   frozenset(folders))


def _folders(keys: list[str]) -> list[str]:
    """The sub-folders in a listing, without certlocker's own (``_system``: documents
    such as the target allow-list, never a certificate)."""
    return [k.rstrip("/") for k in keys if k.endswith("/") and not k.startswith("_")]


def _permitted(caller: Lister, environment: str, services: list[str]) -> list[str]:
    """The service folders of ``environment`` Vault lets ``caller`` list."""
    paths = caller.paths
    allowed: list[str] = []
    for start in range(0, len(services), PROBE_BATCH):
        batch = services[start:start + PROBE_BATCH]
        asked = {paths.metadata_path(paths.specs_dir(environment, s)) + "/": s
                 for s in batch}
        caps = caller.capabilities_of(list(asked))
        allowed.extend(s for path, s in asked.items() if caps.get(path, set())
                       & {"list", "root"})
    return allowed


def _names(caller: Lister, folders: list[tuple[str, str]],
           strict: bool) -> Iterator[CertificateRef]:
    """Every certificate in ``folders``, listed with the caller's token. A folder
    refused (one the caller did not name: a policy that lets it list an environment but
    not every service in it, or one changed since the probe) is skipped unless
    ``strict``."""
    paths = caller.paths
    for env, svc in folders:
        try:
            names = caller.list(paths.specs_dir(env, svc))
        except AccessDenied:
            if strict:
                raise
            continue
        for name in names:
            if not name.endswith("/") and not name.startswith("_"):
                yield CertificateRef(env, svc, name)
