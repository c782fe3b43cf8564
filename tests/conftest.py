"""Session-wide real servers for the integration tests.

- ``openbao``: a ``bao server -dev`` (``.addr``, ``.root_token``, ``.client(token=None)``,
  ``.env(token=None)``);
- ``pebble``: challtestsrv + Pebble (``.directory_url``, ``.ca_bundle``, ``.mgmt_url``,
  ``.http01_port`` — a free port reserved for the server that answers http-01 —,
  ``.dns_server``, ``.roots()``);
- ``certlocker_stack``: the whole dev stack, bootstrapped (``.api_url``, ``.vault_addr``,
  ``.root_token``, ``.operator_token``, ``.env``, ``.client()``).

Each starts on first use, on free ports in its own tmp state dir (server logs are there),
and is stopped by PID at the end of the session. Tests that need a private instance use
the context managers in ``tests/support/stack.py``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Iterator

import pytest

VAULT_DEV = Path(__file__).resolve().parents[1] / "vault-dev"
if str(VAULT_DEV) not in sys.path:
    sys.path.insert(0, str(VAULT_DEV))

from tests.support.stack import (  # noqa: E402
    SHARED_PEBBLE_ENV,
    CertlockerStack,
    OpenBao,
    Pebble,
    running_certlocker,
    running_openbao,
    running_pebble,
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (e.g. from `timeout`) would end pytest without fixture teardown and leave
    # the servers running; as a KeyboardInterrupt, pytest still stops them by PID.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    with running_openbao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with running_pebble(tmp_path_factory.mktemp("pebble"), env=SHARED_PEBBLE_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def certlocker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertlockerStack]:
    with running_certlocker(tmp_path_factory.mktemp("stack")) as stack:
        yield stack
