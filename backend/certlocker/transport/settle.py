"""Reading something that another writer has certainly written, through a replica that
may lag it by a few milliseconds (an OpenBao standby answering from its own copy)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def until_found(read: Callable[[], T | None], wait: float) -> T | None:
    """``read()`` until it finds something or ``wait`` seconds have passed (pauses grow
    from 50 ms); the last answer, None if nothing was found."""
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        found = read()
        if found is not None or time.monotonic() + pause > deadline:
            return found
        time.sleep(pause)
        pause *= 2
