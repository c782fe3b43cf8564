"""A private certlocker stack for the observability tests: verification against Pebble's
issuing root (``trust_roots``), prometheus multiprocess mode, a short metrics refresh."""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import devstack  # noqa: F401  (path set up by tests.support.stack)
import requests

from tests.support.stack import SHARED_PEBBLE_ENV, CertlockerStack, Stack


class ObservabilityStack(Stack):
    def service_env(self) -> dict[str, str]:
        env = super().service_env()
        roots = self.state_dir / "pebble-root.pem"
        if not roots.exists():
            roots.write_text(devstack.pebble_roots(self.ports["pebble_mgmt"], self.ca_bundle))
        multiproc = self.state_dir / "prometheus"
        multiproc.mkdir(exist_ok=True)
        env.update({
            "CERTLOCKER_ISSUERS__PEBBLE__TRUST_ROOTS": str(roots),
            "CERTLOCKER_METRICS_REFRESH_SECONDS": "1",
            "CERTLOCKER_VERIFY_TIMEOUT_SECONDS": "5",
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        })
        return env


@contextmanager
def running_observability_stack(state_dir: Path) -> Iterator[CertlockerStack]:
    stack = ObservabilityStack(state_dir, devstack.free_ports(), pebble_env=SHARED_PEBBLE_ENV)
    stack.up()
    try:
        assert stack.root_token and stack.operator_token and stack.ca_bundle
        yield CertlockerStack(stack=stack, api_url=stack.api_url, vault_addr=stack.vault_addr,
                              root_token=stack.root_token,
                              operator_token=stack.operator_token,
                              directory_url=stack.directory_url, ca_bundle=stack.ca_bundle,
                              state_dir=Path(state_dir),
                              env={**os.environ, **stack.client_env()},
                              metrics_token=stack.metrics_token)
    finally:
        stack.down()


@dataclasses.dataclass
class Api:
    url: str
    token: str

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Vault-Token": self.token, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=120,
                                **kwargs)
