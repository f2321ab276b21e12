"""Schedules and sensors declared in code (stored and run by ``flowstone scheduler``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flowstone.asset import AssetDef, asset_names
from flowstone.errors import ScheduleDefinitionError
from flowstone.pipeline_core import PipelineCore

if TYPE_CHECKING:
    # Annotations only: flowstone.schedules loads on first use, inside the methods below
    # (`import flowstone` must stay light).
    from flowstone.schedules import PartitionFn, ScheduleDef, SensorDef, SensorFn


class PipelineSchedules(PipelineCore):
    """:class:`~flowstone.pipeline.Pipeline`'s schedules and sensors."""

    # --- schedules and sensors --------------------------------------------------------------
    def schedule(
        self,
        name: str,
        asset: str | AssetDef | Sequence[str | AssetDef],
        *,
        cron: str,
        timezone: str = "UTC",
        partition: str | PartitionFn = "none",
        with_upstream: bool = False,
        catch_up: str = "latest",
        catch_up_limit: int = 10,
        max_lateness: timedelta | float | None = None,
        dst_nonexistent: str = "auto",
        dst_repeated: str = "auto",
        tags: Mapping[str, str] | None = None,
    ) -> ScheduleDef:
        """Materialize ``asset`` on a cron schedule, run by ``flowstone scheduler``.

        Declaring a schedule touches no database: a scheduler stores it when it starts, so it
        survives restarts and every scheduler process shares it; each tick is recorded once.

        Args:
            name: The schedule's unique name.
            asset: The asset (or assets) each tick materializes.
            cron: Five cron fields, e.g. ``"0 6 * * *"``, or ``@hourly``/``@daily``/...
            timezone: The IANA zone the cron fields are read in.
            partition: The partition of each tick: a function of the tick's time (an aware
                datetime in ``timezone``), or one of ``"none"``, ``"tick_date"``,
                ``"previous_day"``, ``"tick_hour"``, ``"previous_hour"``, ``"tick_time"``.
            with_upstream: Also materialize everything upstream of ``asset``.
            catch_up: Ticks missed while no scheduler ran: ``"skip"`` them, run only the
                ``"latest"``, or run ``"all"`` (the ``catch_up_limit`` most recent).
            max_lateness: A tick found later than this (timedelta or seconds) is recorded
                ``missed`` and never runs. Default: no limit.
            dst_nonexistent: A cron time inside a DST gap: ``"shift"`` to the end of the gap,
                ``"skip"``, or ``"auto"`` (shift fixed-time schedules, skip wildcard hours).
            dst_repeated: A cron time in a repeated hour: ``"first"`` occurrence only,
                ``"both"``, or ``"auto"`` (first for fixed times, both for wildcard hours).
            tags: Labels stored on each run.

        Raises:
            ScheduleDefinitionError: a bad cron expression, zone or policy, or a name in use.
            UnknownAssetError: ``asset`` is not in this pipeline.

        Example::

            pipeline.schedule(
                "nightly_report", "daily_report", cron="30 2 * * *",
                timezone="Europe/Oslo", partition="previous_day", with_upstream=True,
            )
        """
        targets = [self.graph.get(name).name for name in asset_names(asset)]
        if name in self._schedules:
            raise ScheduleDefinitionError(name, "a schedule with this name is already declared")
        from flowstone.schedules import define_schedule

        definition = define_schedule(
            name,
            targets,
            cron=cron,
            timezone=timezone,
            partition=partition,
            with_upstream=with_upstream,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            max_lateness=max_lateness,
            dst_nonexistent=dst_nonexistent,
            dst_repeated=dst_repeated,
            tags=tags,
        )
        self._schedules[name] = definition
        return definition

    def sensor(
        self, name: str, fn: SensorFn | None = None, *, interval: timedelta | float = 30.0
    ) -> Any:
        """Poll ``fn`` every ``interval`` (seconds or timedelta) and launch the runs it asks for.

        ``fn(cursor)`` gets the cursor it returned last time (None at first) and returns
        ``SensorResult(run_requests, cursor)``, a ``(requests, cursor)`` tuple, or a list of
        :class:`~flowstone.RunRequest`. A request whose ``run_key`` this sensor launched before
        is skipped; an exception is recorded on the sensor's tick (the cursor stays).
        Usable as a decorator: ``@pipeline.sensor("new_files", interval=60)``.

        Example::

            def new_files(cursor):
                seen = int(cursor or 0)
                files = list_files(after=seen)
                requests = [fs.RunRequest("ingest", partition=f.day, run_key=f.name) for f in files]
                return requests, str(max([seen, *(f.number for f in files)]))

            pipeline.sensor("new_files", new_files, interval=60)
        """

        def register(function: SensorFn) -> SensorDef:
            if name in self._sensors:
                raise ScheduleDefinitionError(name, "a sensor with this name is already declared")
            from flowstone.schedules import define_sensor

            definition = define_sensor(name, function, interval=interval)
            self._sensors[name] = definition
            return definition

        return register if fn is None else register(fn)

    @property
    def schedules(self) -> Mapping[str, ScheduleDef]:
        """The schedules declared in code, by name."""
        return dict(self._schedules)

    @property
    def sensors(self) -> Mapping[str, SensorDef]:
        """The sensors declared in code, by name."""
        return dict(self._sensors)
