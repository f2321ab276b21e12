"""Schedules and sensors: definitions, cron times across DST, and catch-up decisions.

Pure logic, no store: the scheduler (:mod:`flowstone.scheduler`) records what these decide.
"""

from __future__ import annotations

from flowstone.schedules.catchup import CatchUpPolicy, TickDecision
from flowstone.schedules.cron import CronTimes
from flowstone.schedules.definitions import (
    BUILTIN_PARTITIONS,
    CODE_PARTITION,
    PartitionFn,
    RunRequest,
    ScheduleDef,
    SensorDef,
    SensorFn,
    SensorResult,
    define_schedule,
    define_sensor,
    same_definition,
    sensor_output,
)

__all__ = [
    "BUILTIN_PARTITIONS",
    "CODE_PARTITION",
    "CatchUpPolicy",
    "CronTimes",
    "PartitionFn",
    "RunRequest",
    "ScheduleDef",
    "SensorDef",
    "SensorFn",
    "SensorResult",
    "TickDecision",
    "define_schedule",
    "define_sensor",
    "same_definition",
    "sensor_output",
]
