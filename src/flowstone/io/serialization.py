"""How plain values become bytes: JSON by default, pickle only when chosen.

JSON is portable and safe to read back. Pickle stores any Python object but runs code when it
is loaded, so a manager uses it only when the user asks for it, for data nobody else can write.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from flowstone.errors import UnsupportedValueError
from flowstone.io.base import StorageKey

Serializer = Literal["json", "pickle"]


def check_serializer(serializer: str) -> Serializer:
    """``serializer`` if it is ``"json"`` or ``"pickle"``, else a ``ValueError``."""
    if serializer == "json":
        return "json"
    if serializer == "pickle":
        return "pickle"
    raise ValueError(f"serializer must be 'json' or 'pickle', got {serializer!r}")


def dump_json(key: StorageKey, value: Any) -> str:
    """``value`` as compact JSON text, or an error that says what to return instead.

    Raises:
        UnsupportedValueError: the value is not JSON data (or holds NaN or infinity).
    """
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise UnsupportedValueError(
            f"Asset {key.asset!r} returned a {type(value).__name__} that JSON cannot store "
            f"({exc}). Return JSON-compatible data (dict, list, str, numbers), a DataFrame to "
            "a columnar manager (ParquetIOManager), or choose serializer='pickle' for "
            "trusted storage only.",
            asset=key.asset,
            partition=key.partition,
            value_type=type(value).__name__,
        ) from exc


def dump(key: StorageKey, value: Any, serializer: Serializer) -> bytes:
    """``value`` serialized with ``serializer``."""
    if serializer == "pickle":
        import pickle

        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return dump_json(key, value).encode()


def load(data: bytes, serializer: Serializer) -> Any:
    """The value that :func:`dump` turned into ``data``."""
    if serializer == "pickle":
        import pickle

        # The user chose pickle for storage only they can write (see the manager's docs).
        return pickle.loads(data)
    return json.loads(data)
