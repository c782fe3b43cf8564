"""Installing secret files on a server host: atomically, 0600, never half-written."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one rename, so a reader (a server reloading, a
    restart) sees the old file or the new one, never a mix.

    The temporary file is created beside ``path`` (same filesystem, so the rename is
    atomic) with ``mode`` from the start, never wider; it is fsynced before the rename
    and the directory after it, so a crash cannot leave an empty file in place.

    :raises OSError: the directory is missing or not writable.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path = Path(path)
    tmp = path.with_name(f".{path.name}.certlocker-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it further; never wider
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
