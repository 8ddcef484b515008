"""Weekly scoring on customer partitions (the Dask engine), and its capacity cut.

Each partition is scored with the local engine's ``score_partition``; the drift bin counts add
up across partitions, and the capacity cut is a top-k per partition, then one global merge.

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
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from churnflow.features.labels import active_customers
from churnflow.features.partitioned import (
    RawPartitions,
    Validated,
    raise_problems,
    validate_partitions,
)
from churnflow.features.profile import combine_counts, psi_from_counts
from churnflow.features.settings import Settings
from churnflow.serving.priority import rank_order, recently_contacted, within_capacity
from churnflow.serving.score import score_partition
from churnflow.training.bundle import ModelBundle

if TYPE_CHECKING:
    from dask.delayed import Delayed


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


# ---- weekly scoring, one partition at a time ----------------------------------------------------


@dataclass
class PartitionScores:
    """One partition's score rows, drift bin counts and list candidates (stays on its worker)."""

    rows: pd.DataFrame | None = None
    counts: dict[str, list[int]] = field(default_factory=dict)
    candidates: pd.DataFrame | None = None


def score_validated_partition(part: Validated, as_of: pd.Timestamp, bundle: ModelBundle,
                              settings: Settings) -> PartitionScores:
    """``score_partition`` on one partition's active customers, plus its list candidates."""
    if part.tables is None:
        return PartitionScores()
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    ids = active_customers(part.tables, as_of, settings.churn.min_tenure_days,
                           require_history=settings.churn.definition != "label" or bundle.schema.has_events)
    if not len(ids):
        return PartitionScores()
    ids = pd.Index(np.sort(np.asarray(ids)))  # the order the local engine scores in
    rows, counts = score_partition(part.tables, ids, as_of, bundle, settings)
    return PartitionScores(rows, counts, partition_candidates(rows, settings, part.tables.contacts, as_of))


@dataclass
class PartitionedScores:
    parts: list[Delayed]
    """``PartitionScores`` per partition, kept on the workers (:func:`score_rows` for the rows)."""
    drift: pd.DataFrame
    candidates: pd.DataFrame
    """Every row that can make this week's list, ranked: ``build_priority_list`` input."""
    n_scored: int


def score_partitioned(raw: RawPartitions, as_of: pd.Timestamp, bundle: ModelBundle,
                      settings: Settings) -> PartitionedScores:
    """Weekly scoring on the Dask engine: validate, score and count per partition; merge the
    drift counts and the list candidates once. The score rows stay on the workers."""
    import dask

    validated, summaries = validate_partitions(raw, settings, require_label=False)
    raise_problems(summaries)
    model = dask.delayed(bundle, pure=True)  # shipped once, not once per partition
    score = dask.delayed(score_validated_partition, pure=True)
    parts = list(dask.persist(*[score(v, as_of, model, settings) for v in validated]))
    small = dask.compute(*[dask.delayed(_summary, pure=True)(p) for p in parts])
    n_scored = sum(n for n, _, _ in small)
    if not n_scored:
        raise ValueError(f"no active customers at {pd.Timestamp(as_of).date()}: check the as-of date and the data")
    drift = (psi_from_counts(bundle.reference, combine_counts(c for _, c, _ in small if c),
                             settings.serving.drift_warn_psi, settings.serving.drift_fail_psi)
             if bundle.reference else pd.DataFrame(columns=["feature", "psi", "status"]))
    return PartitionedScores(parts, drift, merge_candidates(c for _, _, c in small), n_scored)


def _summary(part: PartitionScores) -> tuple[int, dict[str, list[int]], pd.DataFrame | None]:
    return (0 if part.rows is None else len(part.rows)), part.counts, part.candidates


def score_rows(parts: list[Delayed]) -> list[Delayed]:
    """The score rows of each partition (for ``features.partitioned.write_parts``)."""
    import dask

    return [dask.delayed(getattr, pure=True)(p, "rows") for p in parts]
