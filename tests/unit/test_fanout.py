"""Fan-outs over a shared executor keep each call's own limit, as the per-call pools
they replaced did, and answer in the order of the input."""

from __future__ import annotations

import threading
import time

import pytest

from certlocker.fanout import bounded_map, completed
from tests.support.pools import threads


def test_one_call_keeps_its_limit_on_a_larger_pool() -> None:
    lock, running, peak = threading.Lock(), [0], [0]

    def work(n: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return n * n

    with threads(16) as pool:
        assert bounded_map(pool, work, range(20), 3) == [n * n for n in range(20)]
    assert peak[0] == 3


def test_every_call_finishes_before_the_first_error_is_raised() -> None:
    done: list[int] = []

    def work(n: int) -> int:
        if n == 1:
            raise ValueError("one")
        time.sleep(0.02)
        done.append(n)
        return n

    with threads(4) as pool, pytest.raises(ValueError):
        bounded_map(pool, work, range(4), 4)
    assert sorted(done) == [0, 2, 3]


def test_completed_names_each_item_by_its_index() -> None:
    with threads(2) as pool:
        seen = {i: f.result() for i, f in completed(pool, str.upper, ["a", "b", "c"], 2)}
    assert seen == {0: "A", 1: "B", 2: "C"}
