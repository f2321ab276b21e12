"""Who works on a backfill: owner tokens, liveness, and the heartbeat thread.

The process working on a backfill writes its ``owner`` (``host:pid:token``) into the record
and a heartbeat every ``HEARTBEAT_S`` from a background thread, which also reads the status, so
a cancel asked from another process arrives within a heartbeat. Every write of a pass is
conditional on still being the owner, and a takeover is a compare-and-set on the owner: two
processes never work on one backfill.

An owner is dead when it ran on this host and its pid is gone (no need to wait), or when its
heartbeat is older than ``LEASE_S``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from datetime import datetime

from flowstone.backfill_materializer import StopFlag
from flowstone.backfill_records import BackfillRecord, BackfillStatus
from flowstone.errors import FlowStoneError
from flowstone.records import new_id, utcnow
from flowstone.store import MetadataStore

log = logging.getLogger("flowstone.backfill")

HEARTBEAT_S = 2.0
#: A backfill whose owner has not written a heartbeat for this long is taken to be abandoned.
LEASE_S = 30.0


def new_owner() -> str:
    """A new owner token for this process: ``host:pid:token``."""
    return f"{_hostname()}:{os.getpid()}:{new_id()[:8]}"


def owner_alive(
    record: BackfillRecord, now: datetime, *, lease_s: float, local: Collection[str] = ()
) -> bool:
    """Whether a live process works on ``record``.

    Args:
        local: The owners of the passes running in this process (alive by definition).
    """
    if record.owner is None:
        return False
    if record.owner in local:
        return True
    host, _, rest = record.owner.partition(":")
    pid = rest.partition(":")[0]
    same_host = host == _hostname() and pid.isdigit() and int(pid) != os.getpid()
    if same_host and not _pid_alive(int(pid)):
        return False  # its process is gone: no need to wait for the lease
    if record.heartbeat_at is None:
        return False
    return (now - record.heartbeat_at).total_seconds() < lease_s


class Heartbeat:
    """A daemon thread that proves a pass is alive and watches for a cancel or a takeover.

    Example::

        heartbeat = Heartbeat(store, backfill.id, owner, stop, HEARTBEAT_S)
        heartbeat.start()
        try:
            ...  # the pass; ``stop`` is set on a cancel, or when another process took over
        finally:
            heartbeat.stop()
    """

    def __init__(
        self, store: MetadataStore, backfill_id: str, owner: str, stop: StopFlag, interval: float
    ) -> None:
        self._store, self._id, self._owner = store, backfill_id, owner
        self._stop, self._interval = stop, interval
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"flowstone-backfill-{backfill_id[:8]}", daemon=True
        )

    def start(self) -> None:
        """Start beating."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (at once: the thread waits on an event, not a sleep)."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            try:
                record = self._store.heartbeat_backfill(self._id, owner=self._owner, now=utcnow())
            except FlowStoneError:
                log.warning("Backfill %s: heartbeat failed; retrying", self._id, exc_info=True)
                continue
            if record is None:
                self._stop.set("lost")
            elif record.status == BackfillStatus.CANCELING:
                self._stop.set("canceled")


def current_user() -> str:
    """The OS user running this process (who started a backfill, by default)."""
    import getpass  # only when a backfill starts: keeps `import flowstone` light

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill would terminate it on Windows: trust the heartbeat there
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but is not ours (or we cannot tell): trust the heartbeat
    return True
