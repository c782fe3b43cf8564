"""http-01 answers served from this process's memory where it can.

Every answer is still written to shared storage before the CA is told to validate, so
any replica (or another gunicorn worker) behind the load balancer answers from Vault.
When the CA's request reaches the process whose issuance published the token, that
process answers from memory. A CA validating from several vantage points sends a few
requests per challenge; a process that had to read an answer from storage keeps it for
a short while, so the next of those requests costs no read either.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import OrderedDict
from typing import Callable

from ..ports import SharedChallenges


class LocalFirstChallenges:
    """A ``ChallengeStore`` over shared storage with a bounded in-memory copy of the
    answers this process put (until it deletes them) or read (for ``read_ttl`` seconds).

    A token is unique to one challenge and its answer never changes, so a copy cannot
    be wrong; a copy read from storage may outlive the challenge by ``read_ttl``, which
    only means a CA asking about a finished challenge still gets its (public) answer.
    At most ``capacity`` answers are kept; the oldest go first. Concurrent misses for
    one token share a single read.
    """

    def __init__(self, shared: SharedChallenges, capacity: int = 10_000,
                 read_ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._shared = shared
        self._capacity = capacity
        self._read_ttl = read_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._local: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._reading: dict[str, cf.Future[str | None]] = {}

    def put(self, token: str, key_authorization: str) -> None:
        """Store in shared storage first (raises as it does), then remember locally."""
        self._shared.put(token, key_authorization)
        self._remember(token, key_authorization, None)

    def get(self, token: str) -> str | None:
        with self._lock:
            found = self._local.get(token)
        if found is not None:
            remembered, expires = found
            if expires is None or expires > self._clock():
                return remembered
        with self._lock:  # a CA's vantage points ask at once: one of them reads
            reading = self._reading.get(token)
            leader = reading is None
            if leader:
                reading = self._reading[token] = cf.Future()
        assert reading is not None
        if not leader:
            return reading.result()
        try:
            answer = self._shared.get(token)
        except BaseException as exc:
            with self._lock:
                self._reading.pop(token, None)
            reading.set_exception(exc)
            raise
        if answer is not None:  # remembered before the next asker can miss it
            self._remember(token, answer, self._clock() + self._read_ttl)
        with self._lock:
            self._reading.pop(token, None)
        reading.set_result(answer)
        return answer

    def delete(self, token: str) -> None:
        with self._lock:
            self._local.pop(token, None)
        self._shared.delete(token)

    def _remember(self, token: str, answer: str, expires: float | None) -> None:
        with self._lock:
            self._local[token] = (answer, expires)
            self._local.move_to_end(token)
            while len(self._local) > self._capacity:
                self._local.popitem(last=False)
