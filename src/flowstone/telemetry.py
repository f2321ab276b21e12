"""Telemetry events: what FlowStone is doing, for metrics, tracing and logs.

Subscribe a handler to a pipeline and it receives every event (or those whose name starts with a
prefix). Handlers run synchronously in the thread that emitted the event, so keep them quick; a
handler that raises is logged and never fails a materialization.

Events (``name``: measurements / metadata):

- ``run.start`` / ``run.stop``: - / ``run_id``, ``targets``, ``partition``, ``status``
- ``materialization.start``: - / ``asset``, ``partition``, ``run_id``, ``attempt``
- ``materialization.stop``: ``duration_ms`` / ... plus ``status``
- ``materialization.exception``: ``duration_ms`` / ... plus ``error_type``, ``error``
- ``materialization.skipped``: - / ... plus ``reason``
- ``materialization.waiting``: ``duration_ms`` / ... plus ``approval_id`` (it asked for approval)
- ``approval.requested|approved|rejected|expired``: - / ``approval_id``, ``asset``,
  ``partition``, ``run_id``, ``status``, ``actor`` (who decided; None for a request or expiry)
- ``io.load.start|stop``, ``io.store.start|stop``: ``duration_ms`` on stop / ``asset``,
  ``partition``, ``io_manager``
- ``schedule.tick``: ``lateness_s`` / ``schedule``, ``tick_time``, ``status``, ``run_id``,
  ``reason``
- ``sensor.tick``: ``duration_ms`` / ``sensor``, ``status`` (None for an empty poll),
  ``applied`` (False when another scheduler applied its poll first), ``launched``, ``reason``

Example::

    events = []
    pipeline.subscribe(events.append, prefix="materialization.")
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("flowstone.telemetry")


@dataclass(frozen=True, slots=True)
class TelemetryEvent:
    """One event: a dotted name, numbers measured, and context."""

    name: str
    measurements: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Handler = Callable[[TelemetryEvent], object]


class Telemetry:
    """The handlers subscribed to one pipeline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: tuple[tuple[str, Handler], ...] = ()

    def subscribe(self, handler: Handler, *, prefix: str = "") -> Callable[[], None]:
        """Call ``handler`` for each event whose name starts with ``prefix``.

        Returns:
            A function that unsubscribes the handler.
        """
        entry = (prefix, handler)
        with self._lock:
            self._handlers = (*self._handlers, entry)

        def unsubscribe() -> None:
            with self._lock:
                self._handlers = tuple(h for h in self._handlers if h is not entry)

        return unsubscribe

    @property
    def active(self) -> bool:
        """Whether anyone listens; lets hot paths skip building events."""
        return bool(self._handlers)

    def emit(
        self,
        name: str,
        metadata: Mapping[str, Any],
        measurements: Mapping[str, float] | None = None,
    ) -> None:
        """Send an event to the matching handlers."""
        handlers = self._handlers  # a tuple swapped atomically: no lock on the hot path
        if not handlers:
            return
        event = TelemetryEvent(name, measurements or {}, metadata)
        for prefix, handler in handlers:
            if name.startswith(prefix):
                try:
                    handler(event)
                except Exception:
                    log.exception("Telemetry handler %r failed on %s", handler, name)
