"""Metadata stores: the protocol, and a way to open one from a URL.

``open_store`` imports SQLAlchemy only when a SQL store is asked for, so ``import flowstone``
stays fast and the memory store needs nothing beyond the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowstone.store.base import MAX_LINEAGE_DEPTH, MetadataStore

if TYPE_CHECKING:
    from flowstone.store.memory import MemoryStore


def __getattr__(name: str) -> Any:
    # MemoryStore loads on first access (PEP 562): it pulls in every feature's records, and
    # most processes use the SQL store.
    if name == "MemoryStore":
        from flowstone.store.memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module 'flowstone.store' has no attribute {name!r}")


__all__ = ["MAX_LINEAGE_DEPTH", "MemoryStore", "MetadataStore", "open_store"]


def open_store(url: str) -> MetadataStore:
    """Open the metadata store at ``url``.

    Args:
        url: ``"memory"`` for a :class:`MemoryStore`, or a SQLAlchemy URL such as
            ``"sqlite:///.flowstone/flowstone.db"`` or
            ``"postgresql+psycopg://user@host/db"``.

    Raises:
        StoreUnavailableError: the database cannot be opened; the message says why.

    Example::

        store = open_store("sqlite:///metadata.db")
    """
    if url in ("memory", "memory://"):
        from flowstone.store.memory import MemoryStore

        return MemoryStore()
    from flowstone.store.sql import SQLStore

    return SQLStore(url)
