"""The capacity cut on partitioned scores: a top-k per partition, then one global merge.

Scores computed partition by partition (Dask, chunks) never need to meet in one table to cut
the weekly list: each partition keeps only the rows that could make it (its own ranked prefix,
up to its ``capacity``-th contactable customer), and the list built from the merged candidates
is the list built from all scores. Why this is exact: a customer on the global list has fewer
than ``capacity`` contactable customers ranked above it overall, hence also within its own
partition; and the first ``capacity`` contactable customers overall all survive, so nobody
below them can slip onto the list.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

import numpy as np
import pandas as pd

from features.settings import Settings
from serving.priority import rank_order, recently_contacted, within_capacity


def partition_candidates(scored: pd.DataFrame, settings: Settings, contacts: pd.DataFrame | None = None,
                         as_of: date | datetime | pd.Timestamp | None = None) -> pd.DataFrame:
    """The rows of one partition's scores that can make the list, in priority order.

    The same steps as ``build_priority_list`` up to the cut: minimum probability, ranking,
    suppression of recent contacts (they are kept but use no capacity), capacity.
    """
    cfg = settings.serving
    if as_of is None and "as_of" in scored.columns and len(scored):
        as_of = pd.Timestamp(scored["as_of"].iloc[0])
    eligible = scored[scored["churn_probability"].to_numpy(np.float64) >= cfg.min_probability]
    ranked = rank_order(eligible)
    recent = recently_contacted(ranked["customer_id"], contacts, as_of, cfg.cooldown_days)
    return ranked[within_capacity(~recent, cfg.capacity)]


def merge_candidates(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """All partitions' candidates in global priority order (feed to ``build_priority_list``)."""
    parts = [p for p in parts if p is not None]
    frames = [p for p in parts if len(p)] or parts[:1]
    if not frames:
        return pd.DataFrame(columns=["customer_id", "churn_probability", "value_at_risk"])
    return rank_order(pd.concat(frames, ignore_index=True)).reset_index(drop=True)
