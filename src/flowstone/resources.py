"""Resources: clients, connections and other runtime dependencies that assets ``require``.

A pipeline maps names to resource providers. Within a run, each resource is set up the first time
an asset that requires it runs (so a run that needs no database never connects to one), shared by
every asset of the run, and torn down when the run ends, even when it fails. A resource whose
setup fails fails only the assets that require it, with that error.

A provider can be:

- an object with ``setup()`` (and optionally ``teardown(value)``): see :class:`Resource`;
- a function wrapped with :func:`resource`: a generator function (code before ``yield`` sets up,
  code after tears down, as with :func:`contextlib.contextmanager`) or a plain factory;
- a context manager object: entered at setup, exited at teardown (once per run, so it must be
  re-enterable; a ``@contextmanager`` generator is single-use: wrap its function with
  :func:`resource` instead);
- any other object, handed to assets as it is.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flowstone.errors import ResourceSetupError

log = logging.getLogger("flowstone.resources")


@runtime_checkable
class Resource(Protocol):
    """A resource with an explicit lifecycle. ``teardown`` is optional."""

    def setup(self) -> Any:
        """Create the value assets receive (a client, a connection...)."""
        ...


@dataclass(frozen=True, slots=True)
class FunctionResource:
    """A resource made by a function; see :func:`resource`."""

    fn: Callable[[], Any]

    def setup(self) -> Any:
        """Call the function, or enter it when it is a generator function."""
        if inspect.isgeneratorfunction(self.fn):
            manager = contextlib.contextmanager(self.fn)()
            return _Entered(manager, manager.__enter__())
        return self.fn()

    def teardown(self, value: Any) -> None:
        """Run the code after ``yield``, if any."""
        if isinstance(value, _Entered):
            value.manager.__exit__(None, None, None)


@dataclass(frozen=True, slots=True)
class _Entered:
    manager: contextlib.AbstractContextManager[Any]
    value: Any


def resource(fn: Callable[[], Any]) -> FunctionResource:
    """Make a resource from a function, set up once per run.

    Example::

        @fs.resource
        def warehouse():
            conn = connect(os.environ["WAREHOUSE_URL"])
            yield conn          # assets that require "warehouse" receive conn
            conn.close()        # runs when the run ends, even if it failed

        pipeline = fs.Pipeline(assets, resources={"warehouse": warehouse})
    """
    return FunctionResource(fn)


class ResourceScope:
    """The resources of one run: set up on first use, shared, torn down at :meth:`close`."""

    def __init__(self, providers: Mapping[str, Any]) -> None:
        self._providers = providers
        self._lock = threading.Lock()
        # One lock per resource: a slow setup blocks only the assets that need that resource.
        self._locks = {name: threading.Lock() for name in providers}
        self._values: dict[str, Any] = {}
        self._failures: dict[str, BaseException] = {}
        self._teardowns: list[tuple[str, Callable[[], None]]] = []

    def get(self, names: frozenset[str], *, asset: str) -> dict[str, Any]:
        """Set up (once) and return the resources named, for ``asset``.

        Raises:
            ResourceSetupError: a resource failed to set up (now or earlier in this run).
        """
        if not names:
            return {}
        return {name: self._get(name, asset) for name in sorted(names)}

    def _get(self, name: str, asset: str) -> Any:
        with self._locks[name]:
            if name in self._values:
                return self._values[name]
            failure = self._failures.get(name)
            if failure is None:
                try:
                    value = self._setup(name)
                except Exception as exc:
                    self._failures[name] = failure = exc
                else:
                    self._values[name] = value
                    return value
        raise ResourceSetupError(
            f"Resource {name!r}, required by asset {asset!r}, failed to set up: "
            f"{type(failure).__name__}: {failure}. Fix the resource's setup; assets that do not "
            "require it were not affected.",
            asset=asset,
            resource=name,
        ) from failure

    def _setup(self, name: str) -> Any:
        provider = self._providers[name]
        if isinstance(provider, Resource):
            value = provider.setup()
            teardown = getattr(provider, "teardown", None)
            if callable(teardown):
                self._add_teardown(name, lambda: teardown(value))
            if isinstance(value, _Entered):
                return value.value
            return value
        if isinstance(provider, contextlib.AbstractContextManager):
            value = provider.__enter__()
            self._add_teardown(name, lambda: provider.__exit__(None, None, None))
            return value
        return provider

    def _add_teardown(self, name: str, teardown: Callable[[], None]) -> None:
        with self._lock:
            self._teardowns.append((name, teardown))

    def close(self) -> None:
        """Tear down every resource set up, newest first. Teardown errors are logged, so one
        failing teardown never stops the others."""
        with self._lock:
            teardowns, self._teardowns = self._teardowns, []
            self._values.clear()
        for name, teardown in reversed(teardowns):
            try:
                teardown()
            except Exception:
                log.exception("Teardown of resource %r failed", name)

    def __enter__(self) -> ResourceScope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> Iterator[str]:
        """The names this scope can provide."""
        return iter(self._providers)
