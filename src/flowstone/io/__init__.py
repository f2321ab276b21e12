"""I/O managers: where asset values are stored and loaded from.

The protocol is four methods over a :class:`StorageKey`. Two implementations ship here: memory
(tests, throwaway runs) and local files (the embedded default, written atomically). A pipeline
names its managers, picks a default, and an asset or a call can choose another by name.
"""

from __future__ import annotations

from flowstone.io.base import IOManager, StorageKey
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager

__all__ = ["FilesystemIOManager", "IOManager", "MemoryIOManager", "StorageKey"]
