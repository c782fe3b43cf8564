"""Vault calls ride out a lost answer, a refused connection and a seal, on real OpenBao.

A ``LossyProxy`` sits between the store and the dev server: it forwards a write, lets
Vault apply it and throws the answer away, as a node that dies or loses leadership right
after committing does. The store must settle such a write by reading back (or, for the
write-only ``certs/`` path, from the metadata) instead of applying it a second time.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from certlocker.errors import Conflict, VaultUnavailable
from certlocker.issuance.base import IssueRequest
from certlocker.models import CertificateRef, KeyType
from certlocker.paths import VaultPaths
from certlocker.vault.client import make_client
from certlocker.vault.store import VaultStore
from tests.support.lossy_proxy import LossyProxy
from tests.support.memory_issuer import MemoryIssuer
from tests.support.stack import OpenBao

pytestmark = pytest.mark.integration

MOUNT = "secret"  # the dev server's KV v2 mount
PATHS = VaultPaths(MOUNT)


@pytest.fixture
def proxy(openbao: OpenBao) -> Iterator[LossyProxy]:
    proxy = LossyProxy(int(openbao.addr.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def versions(openbao: OpenBao, logical: str) -> int:
    meta = openbao.client().secrets.kv.v2.read_secret_metadata(path=logical,
                                                               mount_point=MOUNT)
    return int(meta["data"]["current_version"])


def test_a_check_and_set_write_whose_answer_was_lost_lands_once(
        openbao: OpenBao, proxy: LossyProxy) -> None:
    store = VaultStore.connect(proxy.url, openbao.root_token, PATHS)
    logical = f"retry/lease-{time.monotonic_ns()}"
    first = store.write(logical, {"holder": "a", "expires": 1.5}, cas=0)

    proxy.drop_answer_to(f"POST /v1/{MOUNT}/data/{logical}")
    second = store.write(logical, {"holder": "b", "expires": 2.5}, cas=first)

    assert len(proxy.dropped) == 1
    assert second == first + 1 == versions(openbao, logical)
    assert store.read(logical).data == {"holder": "b", "expires": 2.5}


def test_a_lost_answer_to_a_write_someone_else_overtook_is_a_conflict_not_a_success(
        openbao: OpenBao, proxy: LossyProxy) -> None:
    store = VaultStore.connect(proxy.url, openbao.root_token, PATHS)
    logical = f"retry/raced-{time.monotonic_ns()}"
    proxy.drop_answer_to(f"POST /v1/{MOUNT}/data/{logical}")
    # The answer is lost and, before the store reads back, another writer replaces it.
    original = store._write_once

    def overtaken(path: str, data: dict, cas: int | None) -> int:
        try:
            return original(path, data, cas)
        finally:
            openbao.client().secrets.kv.v2.create_or_update_secret(
                path=logical, secret={"holder": "other"}, mount_point=MOUNT)

    store._write_once = overtaken  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        store.write(logical, {"holder": "mine"}, cas=0)
    assert store.read(logical).data == {"holder": "other"}


def test_a_certificate_whose_answer_was_lost_is_stored_once_by_a_token_that_cannot_read_it(
        openbao: OpenBao, proxy: LossyProxy) -> None:
    root = openbao.client()
    root.sys.create_or_update_policy("certs-writer", f"""
path "{MOUNT}/data/certs/*" {{ capabilities = ["create", "update"] }}
path "{MOUNT}/metadata/certs/*" {{ capabilities = ["read"] }}
""")
    token = root.auth.token.create(policies=["certs-writer"], ttl="10m")["auth"]["client_token"]
    store = VaultStore.connect(proxy.url, token, PATHS)
    ref = CertificateRef("dev", "retry", f"c{time.monotonic_ns()}")
    issued = MemoryIssuer().issue(IssueRequest(ref, ("a.retry.test",), KeyType.EC_P256),
                                  journal=None)  # type: ignore[arg-type]

    proxy.drop_answer_to(f"POST /v1/{MOUNT}/data/certs/")
    version = store.store_certificate(ref, issued, expected_version=None)

    assert len(proxy.dropped) == 1
    assert version == 1 == versions(openbao, PATHS.cert(ref))


def test_refused_connections_are_retried_until_vault_answers(
        openbao: OpenBao, proxy: LossyProxy) -> None:
    store = VaultStore.connect(proxy.url, openbao.root_token, PATHS, retry_seconds=30)
    logical = f"retry/refused-{time.monotonic_ns()}"
    proxy.refuse()
    done: list[int] = []
    writer = threading.Thread(target=lambda: done.append(store.write(logical, {"a": 1}, cas=0)))
    writer.start()
    time.sleep(0.5)  # the writer meets a closed port at least once
    assert not done
    proxy.accept()
    writer.join(30)
    assert done == [1] == [versions(openbao, logical)]


def test_without_a_retry_window_a_refused_connection_fails_at_once(
        openbao: OpenBao, proxy: LossyProxy) -> None:
    store = VaultStore.connect(proxy.url, openbao.root_token, PATHS, retry_seconds=0)
    proxy.refuse()
    with pytest.raises(VaultUnavailable):
        store.read("retry/anything")


def test_a_read_whose_answer_never_comes_is_asked_once_more_past_the_window(
        openbao: OpenBao, proxy: LossyProxy) -> None:
    """The read's timeout alone outlasts the retry window; it is still asked once more,
    on a new connection, and answers. A second stall fails the caller."""
    store = VaultStore(make_client(proxy.url, openbao.root_token, timeout=1,
                                   retry_seconds=0.5), PATHS)
    logical = f"retry/stalled-{time.monotonic_ns()}"
    store.write(logical, {"a": 1}, cas=0)

    proxy.drop_answer_to(f"GET /v1/{MOUNT}/data/{logical}", hold=True)
    assert store.read(logical).data == {"a": 1}
    assert proxy.dropped == [f"GET /v1/{MOUNT}/data/{logical} HTTP/1.1"]

    proxy.drop_answer_to(f"GET /v1/{MOUNT}/data/{logical}", hold=True, times=2)
    with pytest.raises(VaultUnavailable):
        store.read(logical)
    assert len(proxy.dropped) == 3
