"""Partitions: how an asset's data is split, and how partition keys are encoded.

Example:
    >>> from flowstone.partitions import DailyPartitions, StaticPartitions, MultiPartitions
    >>> grid = MultiPartitions({"region": StaticPartitions(["us", "eu"]),
    ...                         "day": DailyPartitions("2025-01-01", "2025-01-08")})
    >>> len(grid), grid.parse("eu|2025-01-02")
    (14, ('eu', datetime.date(2025, 1, 2)))
"""

from __future__ import annotations

from flowstone.partitions.definitions import (
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
)
from flowstone.partitions.encoding import (
    Partition,
    decode_partition,
    encode_partition,
    partition_repr,
)
from flowstone.partitions.mappings import (
    AllPartitions,
    DimensionMapping,
    IdentityMapping,
    LastPartitions,
    PartitionMapping,
    TimeWindowMapping,
)
from flowstone.partitions.time_window import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    TimeWindowPartitions,
    WeeklyPartitions,
)

__all__ = [
    "AllPartitions",
    "DailyPartitions",
    "DimensionMapping",
    "HourlyPartitions",
    "IdentityMapping",
    "LastPartitions",
    "MonthlyPartitions",
    "MultiPartitions",
    "Partition",
    "PartitionMapping",
    "PartitionsDefinition",
    "StaticPartitions",
    "TimeWindowMapping",
    "TimeWindowPartitions",
    "WeeklyPartitions",
    "decode_partition",
    "encode_partition",
    "partition_repr",
]
