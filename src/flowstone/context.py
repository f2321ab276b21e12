"""The context an asset function receives as its first parameter (``ctx``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowstone.checkpoints import ApprovalRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class AssetContext:
    """What an asset knows about the materialization it is computing.

    Attributes:
        asset: The asset's name.
        partition: The partition being computed (a ``date``, ``datetime``, ``str``, tuple...),
            or ``None`` for an unpartitioned asset.
        partition_key: The partition's tagged encoding, as stored in the metadata store.
        run_id: The run this materialization belongs to.
        materialization_id: This materialization's id in the metadata store.
        attempt: 1 for the first attempt, more for retries.
        resources: Only the resources the asset ``requires``, already set up.
        log: A logger named ``flowstone.asset.<name>``.
        metadata: Add JSON-compatible entries here (row counts, sources...) and they are
            recorded on the materialization.
        approval: None on a first run; when an approval resumed the asset, the decision
            (``decided_by``, ``decided_at``, ``reason``, ``input``).

    Example::

        @fs.asset(requires=["db"])
        def orders(ctx):
            rows = ctx.resources["db"].fetch_orders(ctx.partition)
            ctx.metadata["rows"] = len(rows)
            return rows
    """

    asset: str
    partition: Any
    partition_key: str
    run_id: str
    materialization_id: str
    attempt: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("flowstone.asset"))
    metadata: dict[str, Any] = field(default_factory=dict)
    approval: ApprovalRecord | None = None
