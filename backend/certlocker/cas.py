"""One check-and-set read-modify-write, for every record several writers change.

Shaped after hvac's ``KvV2.patch``: read the record and its version, apply a change
function, write with ``cas=`` the version read. A lost race (``Conflict``) reads again and
re-applies the change to the winner's record, so no writer's change is lost; after the
last attempt the ``Conflict`` is raised. Pure: the caller passes how to read and write,
so the same loop serves the status, grants, discovery records and index documents.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import Conflict

T = TypeVar("T")

DEFAULT_ATTEMPTS = 10


class Unchanged(Exception, Generic[T]):
    """Raised by a change function when nothing needs writing; ``patch`` returns
    ``value`` without a write."""

    def __init__(self, value: T) -> None:
        super().__init__()
        self.value = value


def patch(read: Callable[[], tuple[T | None, int]],
          change: Callable[[T | None], T],
          write: Callable[[T, int], object], *,
          attempts: int = DEFAULT_ATTEMPTS,
          conflict: str = "the record keeps changing under us",
          known: tuple[T | None, int] | None = None,
          again: Callable[[int], bool] | None = None) -> T:
    """Read, ``change``, write with check-and-set; on a lost race do it all again.

    ``read`` answers ``(record or None, version)`` (0: none yet); ``write(new, version)``
    writes with ``cas=version`` and raises ``Conflict`` when it moved. ``change`` may
    raise ``Unchanged(value)`` to return ``value`` with nothing written, or any other
    exception to abort. ``known``: a record and version just read, saving the first read.
    ``again(attempt)`` (after the attempt-th lost race, from 1) says whether to try once
    more (it may wait first); by default up to ``attempts`` tries in all.

    :raises Conflict: ``conflict`` as its detail, when every attempt lost the race.
    """
    attempt = 0
    while True:
        old, version = known if known is not None and attempt == 0 else read()
        try:
            new = change(old)
        except Unchanged as same:
            return same.value  # type: ignore[no-any-return]
        try:
            write(new, version)
            return new
        except Conflict:
            attempt += 1
            if again(attempt) if again is not None else attempt < attempts:
                continue
            raise Conflict(conflict) from None
