"""An I/O manager for plain values on any fsspec filesystem: local, memory, S3, GCS..."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flowstone.io import serialization
from flowstone.io.base import StorageKey
from flowstone.io.frames import content_hash
from flowstone.io.location import DEFAULT_TEMPLATE, Location


class ObjectStoreIOManager:
    """Stores each value as one object under an fsspec URL, JSON by default.

    A write replaces the object whole or not at all (see :mod:`flowstone.io.location`), and a
    value that cannot be serialized never touches the stored one.

    Args:
        root: Any fsspec URL (``"s3://bucket/prefix"``, ``"gs://..."``, ``"memory://x"``,
            ``"file:///data"``) or a local path. ``s3://`` needs ``flowstone[s3]``.
        serializer: ``"json"`` (the default: portable, safe to read) or ``"pickle"`` for any
            Python object. Pickle runs code when loaded: use it only for storage that nobody
            but you can write.
        path_template: Where a value goes under ``root``; fields ``{asset}``,
            ``{partition}`` (the encoded key, unique and path-safe), ``{partition_value}``
            (readable: ``2025-01-15``, ``eu|2025-01-15``) and ``{ext}``. Default:
            ``"{asset}/{partition}.{ext}"``.
        storage_options: Passed to fsspec (``{"endpoint_url": ..., "key": ..., ...}``).

    Example::

        io = fs.io.ObjectStoreIOManager(
            "s3://my-bucket/flowstone", path_template="{asset}/day={partition_value}.{ext}"
        )
        pipeline = fs.Pipeline(assets, io_managers={"s3": io})
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        serializer: serialization.Serializer = "json",
        path_template: str = DEFAULT_TEMPLATE,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.serializer = serialization.check_serializer(serializer)
        self.location = Location(
            root, template=path_template, ext=self.serializer, storage_options=storage_options
        )

    def path(self, key: StorageKey) -> str:
        """The path (within the filesystem) that holds ``key``'s value."""
        return self.location.path(key)

    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        data = serialization.dump(key, value, self.serializer)
        path = self.location.path(key)
        self.location.write(key, path, data)
        return {
            "uri": self.location.url(path),
            "bytes": len(data),
            "content_hash": content_hash(data),
            "format": self.serializer,
        }

    def load(self, key: StorageKey) -> Any:
        data = self.location.read(key, self.location.path(key))
        return serialization.load(data, self.serializer)

    def exists(self, key: StorageKey) -> bool:
        return self.location.exists(self.location.path(key))

    def delete(self, key: StorageKey) -> None:
        self.location.delete(self.location.path(key))

    def __repr__(self) -> str:
        return f"ObjectStoreIOManager({self.location.root!r}, serializer={self.serializer!r})"
