"""An I/O manager that keeps values in a dict."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from flowstone.errors import ValueNotFoundError
from flowstone.io.base import StorageKey


class MemoryIOManager:
    """Keeps values in process memory, by reference (no copy, no serialization).

    Example::

        io = fs.MemoryIOManager()
        pipeline = fs.Pipeline(assets, store="memory", io_managers={"default": io})
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        with self._lock:
            self._values[(key.asset, key.partition_key)] = value
        return None

    def load(self, key: StorageKey) -> Any:
        try:
            with self._lock:
                return self._values[(key.asset, key.partition_key)]
        except KeyError:
            raise ValueNotFoundError(
                f"No value stored in memory for asset {key.asset!r} partition "
                f"{key.partition_key!r}; memory values last only as long as the process.",
                asset=key.asset,
                partition=key.partition,
            ) from None

    def exists(self, key: StorageKey) -> bool:
        with self._lock:
            return (key.asset, key.partition_key) in self._values

    def delete(self, key: StorageKey) -> None:
        with self._lock:
            self._values.pop((key.asset, key.partition_key), None)
