"""Driver errors turned into :class:`~flowstone.errors.StoreError` at the store's boundary, each
worded to say what failed and what to do about it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from flowstone.errors import StoreError, StoreUnavailableError
from flowstone.records import MaterializationRecord

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")


def _detail(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _store_error(exc: sa.exc.SQLAlchemyError, doing: str) -> StoreError:
    detail = _detail(exc)
    if isinstance(exc, sa.exc.IntegrityError):
        return StoreError(
            f"Could not {doing}: it conflicts with what the store holds ({detail}). Each "
            "(run, asset, partition) has one materialization, and a lineage edge must point "
            "at a materialization that is saved with it or before it."
        )
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailableError(
            f"Could not {doing}: the connection to the metadata database was lost ({detail}). "
            "Check that the database server is up, then retry."
        )
    if "database is locked" in detail:
        return StoreError(
            f"Could not {doing}: another process held the SQLite write lock longer than the "
            f"busy timeout ({detail}). Raise busy_timeout_ms, or use PostgreSQL for many "
            "concurrent writers."
        )
    return StoreError(f"Could not {doing}: {detail}")


def _identity_error(records: Sequence[MaterializationRecord]) -> StoreError:
    ids = ", ".join(r.id for r in records[:5]) + (", ..." if len(records) > 5 else "")
    return StoreError(
        f"Could not save materialization {ids}: a materialization with this id exists with a "
        "different run, asset, partition or created_at. Those are fixed by the first save; "
        "record a new materialization (a new id) instead."
    )


def _wraps_errors(
    doing: str,
) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Turn SQLAlchemy and driver errors into :class:`StoreError` at the store's boundary."""

    def decorate(
        method: Callable[Concatenate[S, P], R],
    ) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(self, *args, **kwargs)
            except sa.exc.SQLAlchemyError as exc:
                raise _store_error(exc, doing) from exc

        return wrapper

    return decorate
