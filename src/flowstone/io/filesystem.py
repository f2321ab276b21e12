"""An I/O manager that writes one file per asset and partition, atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from flowstone.errors import IOManagerError, ValueNotFoundError
from flowstone.io.base import StorageKey

Serializer = Literal["json", "pickle"]
# Long partition keys (nested tuples, long strings) are hashed so no file name passes the
# 255-byte limit of common filesystems.
_MAX_NAME = 180


class FilesystemIOManager:
    """Stores each value as a file under ``root/<asset>/<partition>.<ext>``.

    Values are written to a temporary file in the same folder, flushed to disk and renamed over
    the old one, so a crash or a failed serialization never leaves a torn or half-written value:
    readers see the old value or the new one.

    Args:
        root: The folder to write in (created on first store).
        serializer: ``"json"`` (the default: portable, safe to read) or ``"pickle"`` for any
            Python object. Pickle runs code when loaded: use it only for files that nobody but
            you can write.

    Example::

        io = fs.FilesystemIOManager("data/values")
        pipeline = fs.Pipeline(assets, io_managers={"default": io})
    """

    def __init__(self, root: str | os.PathLike[str], *, serializer: Serializer = "json") -> None:
        if serializer not in ("json", "pickle"):
            raise ValueError(f"serializer must be 'json' or 'pickle', got {serializer!r}")
        self.root = Path(root)
        self.serializer: Serializer = serializer

    def path(self, key: StorageKey) -> Path:
        """The file that holds ``key``'s value."""
        name = quote(key.partition_key, safe="-_.")
        if len(name) > _MAX_NAME:
            import hashlib

            name = "h-" + hashlib.sha256(key.partition_key.encode()).hexdigest()
        return self.root / key.asset / f"{name}.{self.serializer}"

    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        data = self._dump(key, value)
        path = self.path(key)
        import tempfile  # imported on first store: keeps `import flowstone` light

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise IOManagerError(
                f"Could not write {path} for asset {key.asset!r}: {exc}. Check that the folder "
                "is writable and the disk has room.",
                asset=key.asset,
                partition=key.partition,
            ) from exc
        from flowstone.io.frames import content_hash  # no heavy import: hashlib on first use

        return {"path": str(path), "bytes": len(data), "content_hash": content_hash(data)}

    def load(self, key: StorageKey) -> Any:
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueNotFoundError(
                f"No stored value for asset {key.asset!r} partition {key.partition_key!r} "
                f"(looked for {path}). Materialize it first.",
                asset=key.asset,
                partition=key.partition,
            ) from None
        except OSError as exc:
            raise IOManagerError(
                f"Could not read {path}: {exc}", asset=key.asset, partition=key.partition
            ) from exc
        if self.serializer == "pickle":
            import pickle

            return pickle.loads(data)
        return json.loads(data)

    def exists(self, key: StorageKey) -> bool:
        return self.path(key).is_file()

    def delete(self, key: StorageKey) -> None:
        self.path(key).unlink(missing_ok=True)

    def _dump(self, key: StorageKey, value: Any) -> bytes:
        if self.serializer == "pickle":
            import pickle

            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
            # JSON turns tuples into lists and int keys into strings; a value that does not
            # come back equal would hand downstream assets different inputs than memory does.
            if json.loads(text) != value:
                raise ValueError("it does not read back equal (tuples or non-str dict keys?)")
            return text.encode()
        except (TypeError, ValueError) as exc:
            raise IOManagerError(
                f"Asset {key.asset!r} returned a {type(value).__name__} that JSON cannot store "
                f"({exc}). Return JSON-compatible data (dict, list, str, numbers), or give the "
                "asset another I/O manager: io_manager='memory', or "
                "FilesystemIOManager(root, serializer='pickle') for trusted files.",
                asset=key.asset,
                partition=key.partition,
            ) from exc

    def __repr__(self) -> str:
        return f"FilesystemIOManager({str(self.root)!r}, serializer={self.serializer!r})"
