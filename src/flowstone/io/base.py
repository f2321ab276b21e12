"""The I/O manager protocol."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StorageKey:
    """Which value: an asset and a partition.

    Attributes:
        asset: The asset's name.
        partition: The partition value (``None`` when unpartitioned).
        partition_key: The partition's tagged encoding; stable, unique, safe to build names on.
        type_hint: On a load, the type the reading asset's parameter declares (e.g.
            ``polars.DataFrame``), or ``None``. Managers that can return a value as several
            types (Parquet: pandas, polars, Arrow) honour it; the others ignore it. Not part of
            the key's identity.
    """

    asset: str
    partition: Any
    partition_key: str
    # --- typed loads (issue 7) ---
    type_hint: Any = field(default=None, compare=False)


@runtime_checkable
class IOManager(Protocol):
    """Stores and loads asset values.

    ``store`` must be atomic: after a failed store the previous value (if any) is intact.
    ``load`` raises :class:`~flowstone.errors.ValueNotFoundError` when nothing is stored.
    ``store`` may return JSON-compatible metadata (size, rows...) that FlowStone records on
    the materialization.

    A manager may also have a ``close()`` method (not part of the protocol): ``Pipeline.close()``
    calls it to release connections. As one manager can serve several pipelines, it must open
    them again if it is used after that.
    """

    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        """Store ``value`` for ``key``, replacing any previous value."""
        ...

    def load(self, key: StorageKey) -> Any:
        """Return the value stored for ``key``."""
        ...

    def exists(self, key: StorageKey) -> bool:
        """Whether a value is stored for ``key``."""
        ...

    def delete(self, key: StorageKey) -> None:
        """Remove the value for ``key``; no error if there is none."""
        ...
