"""Weekly scoring: features → calibrated probability → segment → value, one partition at a time.

Memory stays bounded by ``serving.chunk_size``: each partition of customers gets its own
feature table, predictions and drift bin counts, and only the small per-customer score rows are
kept. Reasons (TreeSHAP contributions rendered as phrases) are computed afterwards and only for
the customers who make the list: contributions cost ~100x a prediction, and nobody reads the
reasons of customer #800,000. Every step here is a per-partition function, so the same code
runs on Dask partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churnflow.features.build import build_features
from churnflow.features.contracts import Tables
from churnflow.features.errors import ChurnflowError
from churnflow.features.labels import active_customers
from churnflow.features.profile import bin_counts, combine_counts, psi_from_counts
from churnflow.features.segments import assign_segments
from churnflow.features.settings import Settings
from churnflow.serving.priority import annotate_partition
from churnflow.serving.reasons import top_reasons
from churnflow.training.bundle import ModelBundle

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    scored: pd.DataFrame
    """One row per active customer: id, probability, tier, value at risk, segment (+ contact fields)."""
    drift: pd.DataFrame
    n_partitions: int


def partition_tables(tables: Tables, customer_ids: pd.Index) -> Tables:
    """The rows of ``tables`` that belong to ``customer_ids`` (one partition)."""
    ids = pd.Index(customer_ids)

    def rows(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        return None if frame is None else frame.loc[frame["customer_id"].isin(ids).to_numpy()]

    return Tables(customers=rows(tables.customers), events=rows(tables.events), contacts=rows(tables.contacts),
                  end_date=tables.end_date, dropped_rows=tables.dropped_rows)


def iter_partitions(tables: Tables, customer_ids: pd.Index, size: int) -> Iterator[tuple[pd.Index, Tables]]:
    """Split customers into partitions of at most ``size``, with each partition's own rows.

    Events are sorted by customer (validated tables are), so a partition of sorted ids is a
    contiguous slice of the events: no full scan per partition.
    """
    ids = pd.Index(np.sort(np.asarray(customer_ids)))
    ev = tables.events
    ev_ids = ev["customer_id"].to_numpy() if ev is not None else None
    sorted_events = ev_ids is not None and (len(ev_ids) < 2 or bool(np.all(ev_ids[1:] >= ev_ids[:-1])))
    for start in range(0, len(ids), size):
        part = ids[start:start + size]
        if sorted_events:
            lo = np.searchsorted(ev_ids, part[0], side="left")
            hi = np.searchsorted(ev_ids, part[-1], side="right")
            sub = Tables(customers=tables.customers, events=ev.iloc[lo:hi], contacts=tables.contacts,
                         end_date=tables.end_date, dropped_rows=tables.dropped_rows)
            yield part, partition_tables(sub, part)
        else:
            yield part, partition_tables(tables, part)


def score_partition(part: Tables, ids: pd.Index, as_of: pd.Timestamp, bundle: ModelBundle,
                    settings: Settings) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Score rows and drift bin counts of one partition of customers."""
    feats = build_features(part, as_of, settings, bundle.schema, customer_ids=ids)
    bundle.schema.check_columns(feats)
    probability = bundle.predict_proba(feats)
    feats["segment"] = assign_segments(feats, bundle.segments)
    contact = [c for c in settings.serving.contact_fields if c in part.customers.columns]
    if contact:
        extra = part.customers.set_index("customer_id")[contact].reindex(feats["customer_id"])
        for col in contact:
            feats[col] = extra[col].to_numpy()
    s = settings.serving
    monthly = bundle.schema.monthly_value()
    if monthly is not None:  # no spend history: monthly value over the horizon
        feats["value_over_horizon"] = feats[monthly].astype("float64") * settings.churn.horizon_days / 30.0
    rows = annotate_partition(
        feats, probability, pd.DataFrame(index=feats.index), horizon_days=settings.churn.horizon_days,
        tier_high=s.tier_high, tier_medium=s.tier_medium, contact_fields=contact,
        value_column="value_over_horizon" if monthly is not None else None, spend=bundle.schema.spend_window(),
    )
    rows.insert(1, "as_of", as_of)
    counts = bin_counts(bundle.reference, feats, probability) if bundle.reference else {}
    return rows, counts


def without_flagged_churners(tables: Tables, customer_ids: pd.Index, settings: Settings) -> pd.Index:
    """A snapshot table scored with its churn flag still in it: customers flagged as churned have
    already left, and a retention list must not spend its capacity on them."""
    cu = tables.customers
    if settings.churn.definition != "label" or "label" not in cu.columns:
        return customer_ids
    gone = customer_ids.isin(cu.loc[cu["label"].fillna(0).astype("int8") == 1, "customer_id"])
    if gone.any():
        log.warning("%d customer(s) flagged as churned in %s are not scored: they have already left",
                    int(gone.sum()), settings.data.columns.label or "the label column")
    return customer_ids[~gone]


def score_customers(tables: Tables, as_of: pd.Timestamp, bundle: ModelBundle, settings: Settings,
                    customer_ids: pd.Index | None = None) -> ScoreResult:
    """Score every active customer at ``as_of`` in partitions of ``serving.chunk_size``."""
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    if customer_ids is None:
        customer_ids = active_customers(
            tables, as_of, settings.churn.min_tenure_days,
            require_history=settings.churn.definition != "label" or bundle.schema.has_events,
        )
        customer_ids = without_flagged_churners(tables, customer_ids, settings)
    if not len(customer_ids):
        raise no_active_customers(as_of, tables.end_date)
    frames, counts = [], []
    n_parts = 0
    for ids, part in iter_partitions(tables, customer_ids, settings.serving.chunk_size):
        rows, c = score_partition(part, ids, as_of, bundle, settings)
        frames.append(rows)
        counts.append(c)
        n_parts += 1
        log.info("scored partition %d (%d customers)", n_parts, len(ids))
    scored = pd.concat(frames, ignore_index=True)
    drift = (
        psi_from_counts(bundle.reference, combine_counts(counts), settings.serving.drift_warn_psi,
                        settings.serving.drift_fail_psi)
        if bundle.reference else pd.DataFrame(columns=["feature", "psi", "status"])
    )
    return ScoreResult(scored=scored, drift=drift, n_partitions=n_parts)


def explain_customers(tables: Tables, as_of: pd.Timestamp, bundle: ModelBundle, settings: Settings,
                      customer_ids: pd.Index) -> pd.DataFrame:
    """Top-3 reasons (plain-language phrases) for the given customers, partition by partition."""
    frames = []
    for ids, part in iter_partitions(tables, customer_ids, settings.serving.chunk_size):
        feats = build_features(part, as_of, settings, bundle.schema, customer_ids=ids)
        contributions = bundle.contributions(feats)
        reasons = top_reasons(contributions, feats, bundle.schema.features, bundle.dictionary)
        reasons.insert(0, "customer_id", feats["customer_id"].to_numpy())
        frames.append(reasons)
    if not frames:
        return pd.DataFrame(columns=["customer_id", "reason_1", "reason_2", "reason_3", "reason_group_1"])
    return pd.concat(frames, ignore_index=True)


def priority_list_with_reasons(tables: Tables, as_of: pd.Timestamp, bundle: ModelBundle, settings: Settings,
                               scored: pd.DataFrame, previous: pd.DataFrame | None
                               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """This week's list with reasons, the customers who dropped off, and the scores with reasons.

    Who makes the list does not depend on reasons (ranking is by value at risk), so the list is
    drafted first and reasons are computed for its customers only.
    """
    from churnflow.serving.priority import build_priority_list

    draft, _ = build_priority_list(scored, settings, tables.contacts, previous, as_of)
    reasons = explain_customers(tables, as_of, bundle, settings, pd.Index(draft["customer_id"]))
    with_reasons = scored.merge(reasons, on="customer_id", how="left")
    for col in reasons.columns.drop("customer_id"):
        with_reasons[col] = with_reasons[col].fillna("")
    priority_list, dropped = build_priority_list(with_reasons, settings, tables.contacts, previous, as_of)
    return priority_list, dropped, with_reasons


def drift_gate(drift: pd.DataFrame, settings: Settings, force: bool) -> list[str]:
    """Warnings for drifted features; raises when any is above the refusal threshold unless forced."""
    if drift is None or drift.empty:
        return []
    warn = drift.loc[drift["status"] == "warn", "feature"].tolist()
    fail = drift.loc[drift["status"] == "fail", "feature"].tolist()
    messages = [f"drift warning (PSI > {settings.serving.drift_warn_psi}): {', '.join(warn)}"] if warn else []
    if fail:
        text = (f"drift above serving.drift_fail_psi = {settings.serving.drift_fail_psi} in: {', '.join(fail)}. "
                "The data no longer look like the training data; check the source, retrain with "
                "`churnflow train`, or publish anyway with `churnflow score --force`.")
        if not force:
            raise DriftRefusedError(text)
        messages.append("forced despite " + text)
    return messages


class NoActiveCustomersError(ChurnflowError, ValueError):
    """Nobody to score at the as-of date (an as-of before the data, or the wrong sources)."""


def no_active_customers(as_of: pd.Timestamp, end_date: pd.Timestamp) -> NoActiveCustomersError:
    return NoActiveCustomersError(
        f"no active customers at {as_of.date()}: nobody has a history before that date or every "
        f"customer churned before it (data end {end_date.date()}). Check --as-of / "
        "data.end_date and that the sources are the ones you meant.")


class DriftRefusedError(ChurnflowError, RuntimeError):
    """Today's data drifted beyond the refusal threshold and publishing was not forced."""


def scores_table(scored: pd.DataFrame, model_version: str) -> pd.DataFrame:
    """``scores.parquet``: every scored customer, no reasons, no contact fields."""
    from churnflow.serving.priority import priority_score

    out = scored[["customer_id", "as_of", "churn_probability", "risk_tier", "value_at_risk", "segment"]].copy()
    out.insert(5, "priority_score", priority_score(out["value_at_risk"].to_numpy()))
    out["model_version"] = str(model_version)
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True)
