"""Fan work out over an executor someone else owns, a bounded number at a time.

No package below the composition root makes a thread pool (``composition.Pools`` makes
every one); a function that reads or probes many things at once is given a long-lived
executor and keeps its own limit with these helpers. The executor's ``max_workers`` caps
every caller together; ``limit`` caps one call, as the per-call pool it replaces did.

Never fan out onto the executor the calling code itself runs on: a call that waits for
work queued behind itself on a full pool never returns. Nested fan-outs get a pool of
their own.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def completed(executor: cf.Executor, fn: Callable[[T], R], items: Iterable[T],
              limit: int) -> Iterator[tuple[int, cf.Future[R]]]:
    """Run ``fn(item)`` for each of ``items`` on ``executor``, at most ``limit`` unfinished
    at once, and yield ``(index of the item, its future)`` as each finishes. ``items``
    is read as room frees up, not all at once."""
    limit = max(1, limit)
    source = enumerate(items)
    running: dict[cf.Future[R], int] = {}

    def top_up() -> None:
        while len(running) < limit:
            try:
                index, item = next(source)
            except StopIteration:
                return
            running[executor.submit(fn, item)] = index

    try:
        top_up()
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future
            top_up()
    finally:
        for future in running:  # the caller stopped early: nothing more of ours runs
            future.cancel()


def bounded_map(executor: cf.Executor, fn: Callable[[T], R], items: Iterable[T],
                limit: int) -> list[R]:
    """``fn`` over ``items`` on ``executor``, at most ``limit`` at once; the results in the
    order of ``items``. Like ``with ThreadPoolExecutor(limit) as p: list(p.map(fn, items))``
    it waits for every call before it raises the first exception (in item order)."""
    futures: dict[int, cf.Future[R]] = dict(completed(executor, fn, items, limit))
    return [futures[i].result() for i in range(len(futures))]
