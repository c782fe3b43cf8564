"""The gunicorn workers freeze what loading the app made, so a full garbage collection
walks only what requests allocate (no multi-millisecond stalls in every thread)."""

from __future__ import annotations

import gc

from certlocker.gunicorn_worker import ProblemRefusals


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
