"""Where file-based I/O managers keep values: an fsspec URL, a path template, atomic writes.

The root is any URL fsspec knows (``file://``, ``memory://``, ``s3://`` with s3fs, ``gs://``
with gcsfs...) or a plain local path. Each value's path comes from a template over the asset
and the partition. A write replaces the old value whole or not at all:

- local files: a temporary file in the same folder, fsynced, then renamed over the old one;
- object stores (S3, GCS, Azure, memory): one PUT of the whole object, which the store makes
  visible all at once;
- other filesystems (SFTP, HDFS...): a temporary sibling, then a rename.

fsspec and the filesystem's own package are imported on first use, not when the manager is
built, so a module that defines a pipeline stays cheap to import.
"""

from __future__ import annotations

import contextlib
import os
import string
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from flowstone.errors import IOManagerError, ValueNotFoundError
from flowstone.io.base import StorageKey
from flowstone.partitions import partition_repr

DEFAULT_TEMPLATE = "{asset}/{partition}.{ext}"
#: The fields a path template may use.
TEMPLATE_FIELDS = frozenset({"asset", "partition", "partition_value", "ext"})
# Protocols whose writes are one whole-object PUT: the object appears complete or not at all.
_WHOLE_OBJECT_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory", "oss", "r2"}
)
# Long partition keys are hashed so no path segment passes the 255-byte limit of common
# filesystems (and S3's 1,024-byte keys stay far away).
_MAX_SEGMENT = 180


def check_template(template: str) -> str:
    """``template`` if it is a valid path template, else a ``ValueError`` saying why.

    A template must name the asset and the partition (``{partition}`` or
    ``{partition_value}``), so two values never share a path.
    """
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ValueError(f"Invalid path template {template!r}: {exc}") from exc
    fields = {f for f, _, _ in parsed if f is not None}
    if any(spec or conv for f, spec, conv in parsed if f is not None):
        raise ValueError(
            f"Path template {template!r} formats a field ('!r' or ':spec'); use plain fields "
            "like {asset}: they are already made path-safe."
        )
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"Path template {template!r} uses unknown fields {sorted(unknown)}; the fields are "
            f"{sorted(TEMPLATE_FIELDS)}."
        )
    if "asset" not in fields or not fields & {"partition", "partition_value"}:
        raise ValueError(
            f"Path template {template!r} must contain {{asset}} and {{partition}} (or "
            f"{{partition_value}}) so that every value has a path of its own, e.g. "
            f"{DEFAULT_TEMPLATE!r}."
        )
    return template


def _segment(text: str) -> str:
    """``text`` made safe as one path segment: no separator, no ``..``, not too long."""
    name = quote(text, safe="-_.=")
    if len(name) > _MAX_SEGMENT:
        import hashlib

        return "h-" + hashlib.sha256(text.encode()).hexdigest()
    return name if name.strip(".") else name.replace(".", "%2E") or "%00"


class Location:
    """A root URL, a path template and the fsspec filesystem behind them.

    Args:
        root: An fsspec URL or a local path.
        template: The path of a value under ``root`` (see :func:`check_template`).
        ext: The file extension, for the template's ``{ext}``.
        storage_options: Passed to the fsspec filesystem (credentials, ``endpoint_url``...).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        template: str = DEFAULT_TEMPLATE,
        ext: str,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = os.fspath(root)
        self.template = check_template(template)
        self.ext = ext
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._base = ""
        self._lock = threading.Lock()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem, created on first use.

        Raises:
            IOManagerError: fsspec, or the package for the URL's protocol, is not installed,
                or the URL is malformed.
        """
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    self._base, self._fs = self._open()
        return self._fs

    def _open(self) -> tuple[str, Any]:
        try:
            from fsspec.core import url_to_fs

            fs, base = url_to_fs(self.root, **self.storage_options)
        except (ImportError, ValueError) as exc:
            # fsspec's own message names the package a protocol needs ("Install s3fs...").
            raise IOManagerError(
                f"Cannot open the storage root {self.root!r}: {exc}. Install the extra for "
                "it: pip install 'flowstone[parquet]' (fsspec), 'flowstone[s3]' for s3://.",
                asset="*",
            ) from exc
        return str(base).rstrip("/"), fs

    @property
    def is_local(self) -> bool:
        """Whether the root is on the local disk (so pyarrow can read the file directly)."""
        protocols = self.fs.protocol
        return "file" in (protocols if isinstance(protocols, tuple) else (protocols,))

    def path(self, key: StorageKey) -> str:
        """The path (within the filesystem) of ``key``'s value."""
        relative = self.template.format(
            asset=_segment(key.asset),
            partition=_segment(key.partition_key),
            partition_value=_segment(partition_repr(key.partition)),
            ext=self.ext,
        )
        self.fs  # noqa: B018  # opens the filesystem, which sets the base path
        return f"{self._base}/{relative}" if self._base else relative

    def url(self, path: str) -> str:
        """``path`` as a URL a person can paste (``s3://bucket/...``)."""
        return str(self.fs.unstrip_protocol(path))

    def write(self, key: StorageKey, path: str, data: Any) -> None:
        """Replace the object at ``path`` with ``data`` (bytes-like), whole or not at all.

        Raises:
            IOManagerError: the filesystem refused the write (the old value is intact).
        """
        try:
            self._write(path, data)
        except OSError as exc:
            raise IOManagerError(
                f"Could not write {self.url(path)} for asset {key.asset!r}: {exc}. Check that "
                "the location is writable (permissions, credentials) and has room.",
                asset=key.asset,
                partition=key.partition,
            ) from exc

    def write_local(
        self, key: StorageKey, path: str, produce: Callable[[str], None]
    ) -> tuple[int, str]:
        """On a local root, have ``produce(tmp)`` write the file at a temporary path, then put
        it at ``path`` like :meth:`write`. Returns the file's size and content hash.

        For large files this skips the copy through memory that :meth:`write` needs, and the
        hash is taken as the file grows (``produce`` must write it front to back, as Parquet
        writers do), then while the fsync waits for the disk: it costs almost no time of its
        own.

        Raises:
            IOManagerError: the filesystem refused the write (the old value is intact).
        """
        import tempfile

        parent = os.path.dirname(path) or "."
        tmp = ""
        try:
            os.makedirs(parent, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-", suffix=os.path.splitext(path)[1])
            os.close(fd)
            hasher = _TailHasher(tmp)
            hasher.start()
            try:
                produce(tmp)
            except BaseException:
                hasher.written.set()
                hasher.join()  # it holds the file open: close it before the file is removed
                raise
            hasher.written.set()
            try:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                hasher.join()
            if isinstance(hasher.result, BaseException):
                raise hasher.result
            size = os.path.getsize(tmp)
            if size != hasher.hashed:
                raise OSError(
                    f"{tmp} changed while it was hashed ({hasher.hashed} of {size} bytes)"
                )
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError):
                raise IOManagerError(
                    f"Could not write {path} for asset {key.asset!r}: {exc}. Check that the "
                    "folder is writable and the disk has room.",
                    asset=key.asset,
                    partition=key.partition,
                ) from exc
            raise
        assert isinstance(hasher.result, str)
        return size, hasher.result

    def _write(self, path: str, data: Any) -> None:
        fs = self.fs
        if self.is_local:
            _write_local(path, data)
            return
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        if _WHOLE_OBJECT_PROTOCOLS.intersection(protocols):
            fs.pipe_file(path, bytes(data))
            return
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/.tmp-{os.urandom(6).hex()}-{name}"
        try:
            fs.makedirs(parent, exist_ok=True)
            fs.pipe_file(tmp, bytes(data))
            fs.mv(tmp, path)
        except BaseException:
            if fs.exists(tmp):
                fs.rm_file(tmp)
            raise

    def read(self, key: StorageKey, path: str) -> bytes:
        """The bytes at ``path``; :class:`ValueNotFoundError` when there are none."""
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            raise ValueNotFoundError(
                f"No stored value for asset {key.asset!r} partition {key.partition_key!r} "
                f"(looked for {self.url(path)}). Materialize it first.",
                asset=key.asset,
                partition=key.partition,
            ) from None

    def exists(self, path: str) -> bool:
        """Whether an object is stored at ``path``."""
        return bool(self.fs.isfile(path))

    def delete(self, path: str) -> None:
        """Remove the object at ``path``; nothing happens when there is none."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)


def _write_local(path: str, data: Any) -> None:
    import tempfile

    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # Without the fsync a crash right after the rename can leave an empty file where
            # the old value was.
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _TailHasher(threading.Thread):
    """Hashes a file while another thread writes it front to back: reads what is there,
    waits a moment, reads on, and finishes once :attr:`written` is set and it reached the end.
    (pyarrow releases the GIL while it encodes and compresses, and hashlib while it hashes,
    so both go on at once.)"""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True, name="flowstone-hash")
        self.path = path
        self.written = threading.Event()
        self.hashed = 0
        self.result: str | BaseException | None = None

    def run(self) -> None:
        import hashlib

        digest = hashlib.sha256()
        try:
            with open(self.path, "rb") as handle:
                while True:
                    chunk = handle.read(_CHUNK)
                    if chunk:
                        digest.update(chunk)
                        self.hashed += len(chunk)
                        continue
                    if self.written.is_set():
                        # The writer closed the file before saying so: the rest is all there.
                        while chunk := handle.read(_CHUNK):
                            digest.update(chunk)
                            self.hashed += len(chunk)
                        break
                    self.written.wait(0.002)
            self.result = "sha256:" + digest.hexdigest()
        except BaseException as exc:
            self.result = exc


_CHUNK = 1 << 20
