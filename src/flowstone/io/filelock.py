"""An exclusive lock on a file, shared by threads and processes, with a timeout.

DuckDB lets one process at a time open a database file for writing. The DuckDB I/O manager
therefore takes this lock on a sidecar file around every operation: ``flock`` locks belong to
an open file, so two threads of one process exclude each other just like two processes do.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from flowstone.errors import IOManagerError
from flowstone.io.base import StorageKey


@contextlib.contextmanager
def file_lock(key: StorageKey, path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting at most ``timeout``."""
    try:
        import fcntl
    except ImportError:  # Windows: the thread lock alone serializes this process
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IOManagerError(
                        f"Another process has held the DuckDB lock {path} for more than "
                        f"{timeout:g} s. Wait for it to finish, or raise lock_timeout.",
                        asset=key.asset,
                        partition=key.partition,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)
