"""Small thread pools that belong to one process.

gunicorn may import the app before forking its workers (``--preload``); a forked child
inherits the parent's pool object but none of its threads. A ``ProcessPool`` makes its
executor on first use in each process.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class ProcessPool:
    def __init__(self, threads: int, name: str) -> None:
        self._threads = threads
        self._name = name
        self._lock = threading.Lock()
        self._pool: tuple[int, ThreadPoolExecutor] | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        pool = self._pool
        if pool is None or pool[0] != os.getpid():
            with self._lock:
                pool = self._pool
                if pool is None or pool[0] != os.getpid():
                    pool = (os.getpid(), ThreadPoolExecutor(
                        self._threads, thread_name_prefix=self._name))
                    self._pool = pool
        return pool[1].submit(fn, *args)
