"""The scheduler: runs a pipeline's schedules and sensors, each tick exactly once.

Example::

    from flowstone.scheduler import Scheduler

    Scheduler(pipeline).run_forever()
"""

from __future__ import annotations

from flowstone.scheduler.loop import Scheduler
from flowstone.scheduler.schedule_ticks import TickOutcome

__all__ = ["Scheduler", "TickOutcome"]
