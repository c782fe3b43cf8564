"""The gunicorn workers freeze what loading the app made, so a full garbage collection
walks only what requests allocate (no multi-millisecond stalls in every thread), and
keep connections open longer than any Retry-After certlocker gives a polling client."""

from __future__ import annotations

import gc
from pathlib import Path

from certlocker.acmeserver.server import PROCESSING_RETRY_AFTER
from certlocker.gunicorn_worker import KEEPALIVE, ProblemRefusals


class _Loads:
    def load_wsgi(self) -> None:
        self.app = [object() for _ in range(1000)]  # what loading the app allocates


class _Worker(ProblemRefusals, _Loads):
    pass


def test_loading_the_app_freezes_it_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    try:
        worker = _Worker()
        worker.load_wsgi()
        assert hasattr(worker, "app")  # gunicorn's own loading still ran
        assert gc.get_freeze_count() >= 1000
    finally:
        gc.unfreeze()


def test_connections_are_kept_longer_than_a_polling_client_is_told_to_wait() -> None:
    assert KEEPALIVE > PROCESSING_RETRY_AFTER + 1  # gunicorn sweeps idle connections each second
    devstack = (Path(__file__).parents[2] / "vault-dev" / "devstack.py").read_text()
    assert f'"--keep-alive", "{KEEPALIVE}"' in devstack
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"--keep-alive {KEEPALIVE}" in readme


def test_a_shorter_keep_alive_is_warned_about_when_a_worker_starts() -> None:
    from unittest import mock

    from gunicorn.config import Config

    from certlocker.gunicorn_worker import ThreadWorker

    for keepalive, warned in ((2, True), (KEEPALIVE, False), (0, False)):
        cfg = Config()
        cfg.set("keepalive", keepalive)
        log = mock.Mock()
        worker = ThreadWorker(0, 1, [], None, 30, cfg, log)
        worker.tmp.close()
        assert log.warning.called is warned, keepalive
