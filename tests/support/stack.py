"""Real servers for integration tests, started on free ports and stopped by PID.

Thin, typed handles over ``vault-dev/devstack.py`` (the same code that runs the local dev
stack), as context managers so a test can also start a private instance:

    with running_openbao(tmp_path) as bao:
        bao.client().sys.read_health_status(method="GET")

The session-wide fixtures in ``tests/conftest.py`` are built from these.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

VAULT_DEV = Path(__file__).resolve().parents[2] / "vault-dev"
if str(VAULT_DEV) not in sys.path:
    sys.path.insert(0, str(VAULT_DEV))

import devstack  # noqa: E402  (found through the path set above)
from devstack import Proc, Stack, free_port  # noqa: E402

#: Pebble rejects 5 % of valid nonces by default. The acme library retries a badNonce
#: once, so over a whole suite two rejections in a row would fail some test at random.
#: The shared fixture turns it off; a test of badNonce handling starts its own Pebble
#: with ``running_pebble(..., env={"PEBBLE_WFE_NONCEREJECT": "50"})``.
SHARED_PEBBLE_ENV = {"PEBBLE_WFE_NONCEREJECT": "0"}


def log_events(proc: Proc, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of a certlocker process (those of ``event`` only, if given)."""
    entries = [json.loads(line) for line in proc.log_path.read_text().splitlines()
               if line.startswith("{")]
    return [e for e in entries if event is None or e.get("event") == event]


@dataclasses.dataclass(frozen=True)
class OpenBao:
    """A running ``bao server -dev``: in-memory, unsealed, KV v2 mounted at ``secret/``."""

    addr: str
    root_token: str = dataclasses.field(repr=False)
    proc: Proc
    state_dir: Path

    def client(self, token: str | None = None) -> Any:
        """An ``hvac.Client`` for this server, with ``token`` (default: root)."""
        import hvac

        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=10)

    def env(self, token: str | None = None) -> dict[str, str]:
        """``VAULT_ADDR``/``VAULT_TOKEN`` (and the ``BAO_`` twins) for a subprocess."""
        token = token or self.root_token
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": token,
                "BAO_ADDR": self.addr, "BAO_TOKEN": token}


@dataclasses.dataclass(frozen=True)
class Pebble:
    """A running Pebble plus the challtestsrv DNS it resolves names with.

    Every name resolves to 127.0.0.1 (A only), so Pebble checks http-01 at
    ``http://127.0.0.1:<http01_port>/.well-known/acme-challenge/<token>``; ``http01_port``
    is a free port reserved for the server under test to listen on.
    """

    directory_url: str
    ca_bundle: Path  # trust for Pebble's own HTTPS (directory, management API)
    mgmt_url: str
    mgmt_port: int
    http01_port: int
    tls_port: int  # where Pebble checks tls-alpn-01
    dns_port: int
    challtestsrv_url: str
    procs: tuple[Proc, ...]
    state_dir: Path

    @property
    def dns_server(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def roots(self, index: int = 0) -> str:
        """PEM of the issuing root (new at every Pebble start)."""
        return devstack.pebble_roots(self.mgmt_port, self.ca_bundle, index)

    def challtestsrv(self, endpoint: str, payload: Mapping[str, Any]) -> None:
        """POST ``payload`` to challtestsrv's management API, e.g.
        ``challtestsrv("add-a", {"host": "x.test.", "addresses": ["127.0.0.2"]})``."""
        request = urllib.request.Request(f"{self.challtestsrv_url}/{endpoint}",
                                         data=json.dumps(payload).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()


@dataclasses.dataclass(frozen=True)
class CertlockerStack:
    """The whole dev stack: OpenBao, Pebble, the bootstrapped certlocker API (+ reconciler)."""

    stack: Stack
    api_url: str
    vault_addr: str
    root_token: str = dataclasses.field(repr=False)
    operator_token: str = dataclasses.field(repr=False)
    directory_url: str
    ca_bundle: Path
    state_dir: Path
    #: a whole environment for subprocesses (the CLI, curl): os.environ plus CERTLOCKER_URL,
    #: VAULT_ADDR, VAULT_TOKEN (operator), VAULT_ROOT_TOKEN, ACME_DIRECTORY_URL,
    #: ACME_CA_BUNDLE, PEBBLE_MGMT_URL
    env: Mapping[str, str] = dataclasses.field(repr=False)
    #: what a scrape of /metrics presents as ``Authorization: Bearer``
    metrics_token: str | None = dataclasses.field(default=None, repr=False)

    def metrics_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.metrics_token}"} if self.metrics_token else {}

    def client(self, token: str | None = None) -> Any:
        """An ``hvac.Client`` with ``token`` (default: the operator token)."""
        import hvac

        return hvac.Client(url=self.vault_addr, token=token or self.operator_token, timeout=10)

    def pebble_roots(self) -> str:
        return devstack.pebble_roots(self.stack.ports["pebble_mgmt"], self.ca_bundle)


@contextmanager
def running_openbao(state_dir: Path) -> Iterator[OpenBao]:
    """Start an OpenBao dev server on a free port; stop it (by PID) on exit."""
    port = free_port(2)  # the dev server's cluster listener takes port + 1
    proc, token = devstack.start_openbao(state_dir, port)
    try:
        yield OpenBao(f"http://127.0.0.1:{port}", token, proc, Path(state_dir))
    finally:
        proc.stop()


@contextmanager
def running_pebble(state_dir: Path, *, http01_port: int | None = None,
                   env: Mapping[str, str] | None = None,
                   eab_keys: Mapping[str, str] | None = None) -> Iterator[Pebble]:
    """Start challtestsrv and Pebble on free ports; stop both (by PID) on exit.

    ``http01_port`` defaults to a fresh free port; ``env`` and ``eab_keys`` go to
    :func:`devstack.start_pebble`.
    """
    state_dir = Path(state_dir)
    dns_port, cts_mgmt, port, mgmt, tls = (free_port() for _ in range(5))
    http01 = http01_port or free_port()
    procs: list[Proc] = []
    try:
        procs.append(devstack.start_challtestsrv(state_dir, dns_port, cts_mgmt))
        proc, ca_bundle = devstack.start_pebble(state_dir, port, mgmt, http01, dns_port,
                                                tls_port=tls, env=env, eab_keys=eab_keys)
        procs.append(proc)
        yield Pebble(directory_url=f"https://127.0.0.1:{port}/dir", ca_bundle=ca_bundle,
                     mgmt_url=f"https://127.0.0.1:{mgmt}", mgmt_port=mgmt, http01_port=http01,
                     tls_port=tls, dns_port=dns_port,
                     challtestsrv_url=f"http://127.0.0.1:{cts_mgmt}", procs=tuple(procs),
                     state_dir=state_dir)
    finally:
        for proc in reversed(procs):
            proc.stop()


@contextmanager
def running_stack(state_dir: Path,
                  components: Iterable[str] = devstack.COMPONENTS) -> Iterator[Stack]:
    """A :class:`devstack.Stack` on free ports with ``components`` up; ``down()`` on exit."""
    stack = Stack(state_dir, devstack.free_ports(), pebble_env=SHARED_PEBBLE_ENV)
    stack.up(components)
    try:
        yield stack
    finally:
        stack.down()


@contextmanager
def running_certlocker(state_dir: Path) -> Iterator[CertlockerStack]:
    """The full stack (needs ``certlocker bootstrap vault|auth`` and ``certlocker.app``).

    :raises devstack.MissingCommand: while those commands do not exist.
    """
    with running_stack(state_dir) as stack:
        if not (stack.root_token and stack.operator_token and stack.ca_bundle):
            raise devstack.DevStackError("the stack came up without its tokens or CA bundle")
        yield CertlockerStack(stack=stack, api_url=stack.api_url, vault_addr=stack.vault_addr,
                              root_token=stack.root_token, operator_token=stack.operator_token,
                              directory_url=stack.directory_url, ca_bundle=stack.ca_bundle,
                              state_dir=Path(state_dir),
                              env={**os.environ, **stack.client_env()},
                              metrics_token=stack.metrics_token)
