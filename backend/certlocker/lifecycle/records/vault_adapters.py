"""Adapters from the issuance boundary (Journal, ChallengeStore, AccountStore) onto any
``Store``: small, so any replica resumes an order or answers a challenge from Vault."""

from __future__ import annotations

from typing import Any

from ...errors import Conflict, NotFound
from ...models import Inflight
from ...models import CertificateRef
from ...transport.settle import until_found
from ..ports import Store


class StoreJournal:
    """In-flight issuance state at ``system/inflight/<env>/<service>/<name>``.

    ``nothing_to_resume``: the caller knows no earlier issuance left state worth resuming
    (its lease was the certificate's first), so ``load`` answers None without a read. At
    worst a leftover is then overwritten by the next ``save`` instead of being resumed.
    """

    def __init__(self, store: Store, ref: CertificateRef, *,
                 nothing_to_resume: bool = False) -> None:
        self._store = store
        self._path = store.paths.inflight(ref)
        self._skip_load = nothing_to_resume

    def load(self) -> Inflight | None:
        if self._skip_load:
            return None
        return Inflight.from_json(self._store.read_json(self._path)[0])

    def save(self, state: Inflight) -> None:
        self._store.write_json(self._path, state.to_json(), cas=None)

    def clear(self) -> None:
        try:
            self._store.destroy(self._path)
        except NotFound:
            pass  # nothing was journaled


class StoreChallenges:
    """http-01 key authorizations at ``system/challenges/http-01/<token>``.

    The answer is written by whichever replica drives the order and read by whichever
    API replica the CA reaches, possibly through a Vault standby that answers from its
    own replica a few milliseconds behind. So a miss is looked at again for up to
    ``miss_wait`` seconds before it becomes a 404 the CA would fail the order on.
    """

    def __init__(self, store: Store, miss_wait: float = 1.0) -> None:
        self._store = store
        self._miss_wait = miss_wait

    def put(self, token: str, key_authorization: str) -> None:
        self._store.write(self._store.paths.http01(token),
                          {"key_authorization": key_authorization}, cas=None)

    def get(self, token: str) -> str | None:
        doc = until_found(lambda: self._store.read_json(self._store.paths.http01(token))[0],
                          self._miss_wait)
        return None if doc is None else doc.get("key_authorization")

    def delete(self, token: str) -> None:
        self._store.destroy(self._store.paths.http01(token))


class StoreAccounts:
    """The ACME account of one directory at ``system/acme/accounts/<hash>``."""

    def __init__(self, store: Store, directory_url: str, index: int = 0) -> None:
        self._store = store
        self._path = store.paths.acme_account(directory_url, index)

    def load(self) -> tuple[dict[str, Any] | None, int]:
        return self._store.read_json(self._path)

    def save(self, document: dict[str, Any], cas: int) -> int:
        return self._store.write_json(self._path, document, cas=cas)


class StoreLease:
    """A lease on one certificate so only one replica works on it at a time.

    Taken with check-and-set; a crashed holder's lease expires after ``ttl`` and any
    replica may take it over.
    """

    def __init__(self, store: Store, ref: CertificateRef, holder: str) -> None:
        self._store = store
        self._path = store.paths.lease(ref)
        self._holder = holder
        self._version = 0
        self.first = False  # this lease is the first the certificate ever had

    def acquire(self, now: float, ttl: float, *, probably_first: bool = False) -> bool:
        """Take the lease unless another holder's is still valid.

        ``probably_first``: the caller believes no lease was ever written (a certificate
        just declared), so it is created without reading first; when one exists after
        all, this falls back to reading it.
        """
        if probably_first:
            try:
                self._version = self._store.write_json(
                    self._path, {"holder": self._holder, "expires": now + ttl}, cas=0)
            except Conflict:
                pass
            else:
                self.first = True
                return True
        doc, version = self._store.read_json(self._path)
        if doc and doc.get("holder") not in (None, self._holder) and doc["expires"] > now:
            return False
        try:
            self._version = self._store.write_json(
                self._path, {"holder": self._holder, "expires": now + ttl}, cas=version)
        except Conflict:
            return False
        return True

    def release(self) -> None:
        try:
            self._store.write_json(self._path, {"holder": None, "expires": 0},
                                   cas=self._version)
        except Conflict:
            pass  # it expired and another replica holds it now
