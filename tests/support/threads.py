"""Run a function on several threads at once and collect what they raised."""

from __future__ import annotations

import threading
from typing import Callable


def run_together(count: int, work: Callable[[int], object], *,
                 barrier: bool = True) -> list[BaseException]:
    """Call ``work(n)`` for n in 0..count-1, each on its own thread, all released at
    once when ``barrier`` (else as they start); returns the exceptions raised, so a
    test asserts on them instead of losing them in a thread."""
    start = threading.Barrier(count, timeout=30) if barrier else None
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            if start is not None:
                start.wait()
            work(n)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
