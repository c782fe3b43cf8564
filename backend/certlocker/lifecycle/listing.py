"""Listing the first folders of a date-named index without walking the rest of it.

Vault lists a folder by walking every key beneath it (in memory and in Raft alike), so
listing ``system/schedule/`` at 100,000 certificates costs 100,000 steps even when only
today's folder matters. Asking for the sorted keys a page at a time (``after`` and
``limit``, OpenBao 2+) stops the walk at the end of the page. Pages start at one folder
(the walk then covers the folders wanted and the first key past them) and double up to
``MAX_PAGE``, so a long run of wanted folders costs few calls.
"""

from __future__ import annotations

from typing import Iterator

from .ports import Store

MAX_PAGE = 64


def folders_through(store: Store, directory: str, last: str, *,
                    digits: int) -> Iterator[str]:
    """Names of the sub-folders of ``directory`` made of ``digits`` digits, in order, up
    to and including ``last``. A server that ignores paging answers everything at once,
    which is filtered the same way."""
    after: str | None = None
    size = 1
    while True:
        page = store.list(directory, after=after, limit=size)
        for key in page:
            if after is not None and key <= after:
                continue  # a server that ignored ``after``
            name = key[:-1] if key.endswith("/") else None
            if name is None or len(name) != digits or not name.isascii() \
                    or not name.isdigit():
                continue
            if name > last:
                return
            yield name
        if len(page) != size or not page or (after is not None and page[-1] <= after):
            return  # the last page, or a server that answered everything
        after = page[-1]
        size = min(size * 2, MAX_PAGE)
