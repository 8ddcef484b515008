"""From scores to the weekly retention list: value at risk, tiers, actions, capacity, suppression.

A retention team has a fixed weekly capacity, so the list is ordered by what a contact can save
(probability x the customer's expected value), not by probability alone. Customers contacted
recently are held back (a second call a week after the first annoys more than it saves) and do
not use up capacity. Each customer's status against last week's list tells the agents who is
new, and a separate ``dropped`` frame says who left the list and why.

Everything here is a pure function over DataFrames. The per-customer parts (``value_at_risk``,
``risk_tier``, ``recommend_actions``, ``annotate_partition``) work on one partition of customers
at a time; ranking, capacity and the week-over-week comparison run once on the combined scores
(``build_priority_list``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from churnflow.features.schema import SpendWindow

LIST_COLUMNS = [
    "rank",
    "customer_id",
    "churn_probability",
    "risk_tier",
    "value_at_risk",
    "segment",
    "reason_1",
    "reason_2",
    "reason_3",
    "recommended_action",
    "channel",
    "status",
]
"""Output columns of the priority list, in order (contact fields follow when enabled)."""

DROPPED_COLUMNS = ["customer_id", "previous_rank", "previous_status", "churn_probability", "why"]

STATUS_NEW = "new"
STATUS_STILL_ON = "still on"
STATUS_SUPPRESSED = "suppressed"
STATUS_HOLDOUT = "holdout"
"""Held back at random as this list's control group (``serving.holdout``): never contacted."""
STATUS_HELD_EARLIER = "holdout, earlier list"
"""Still in the control group of an earlier list whose horizon is open: never contacted."""
HELD_BACK = (STATUS_HOLDOUT, STATUS_HELD_EARLIER)
SUPPRESSED_ACTION = "none: contacted within the cool-down period"
NO_RULE_ACTION = "no playbook rule"


# ---- value at risk ------------------------------------------------------------------
def expected_value(
    features: pd.DataFrame,
    horizon_days: int,
    value_column: str | None = None,
    spend: SpendWindow | None = None,
) -> np.ndarray:
    """What the customer is expected to spend over the next ``horizon_days`` if they stay.

    ``spend``: the spend feature over the longest window, that window ``W`` in days and the
    tenure feature, from the model's schema (``FeatureSchema.spend_window()``). Estimate: the
    customer's own spend rate over it (spend divided by ``min(tenure, W)`` days, so a customer who joined 20 days ago
    is not diluted over a full year) times ``horizon_days``. A missing spend counts as no spend
    (0). Tenure below one day counts as one day; missing tenure uses ``W``.

    ``value_column``: a column that already holds the customer's value over the horizon (e.g. a
    contract value); used as is instead of the estimate (missing = 0).

    Fallback: when the data have no spend at all (no ``spend``, or only missing values) every
    customer's value is 1.0, so value at risk equals the churn probability and the list is
    ordered by probability.
    """
    n = len(features)
    if value_column is not None:
        return pd.to_numeric(features[value_column], errors="coerce").fillna(0.0).to_numpy(np.float64)
    if spend is None or spend[0] not in features.columns:
        return np.ones(n)
    column, window, tenure_feature = spend
    amount = pd.to_numeric(features[column], errors="coerce").to_numpy(np.float64)
    if n and np.isnan(amount).all():
        return np.ones(n)
    if tenure_feature is not None and tenure_feature in features.columns:
        tenure = pd.to_numeric(features[tenure_feature], errors="coerce").to_numpy(np.float64)
        days = np.where(np.isnan(tenure), window, np.clip(np.minimum(tenure, window), 1.0, None))
    else:
        days = np.full(n, float(window))
    return np.nan_to_num(amount, nan=0.0).clip(min=0.0) / days * float(horizon_days)


def value_at_risk(
    features: pd.DataFrame,
    probability: np.ndarray,
    horizon_days: int,
    value_column: str | None = None,
    spend: SpendWindow | None = None,
) -> np.ndarray:
    """Expected value lost if the customer churns: ``expected_value(...) * probability``.

    See :func:`expected_value` for the estimate and its fallback to 1.0 without monetary data.
    """
    p = np.asarray(probability, dtype=np.float64)
    return expected_value(features, horizon_days, value_column, spend) * p


def risk_tier(probability: np.ndarray, high: float, medium: float) -> np.ndarray:
    """``"high"`` at or above ``high``, ``"medium"`` at or above ``medium``, else ``"low"``."""
    p = np.asarray(probability, dtype=np.float64)
    return np.where(p >= high, "high", np.where(p >= medium, "medium", "low")).astype(object)


def priority_score(value_at_risk: np.ndarray) -> np.ndarray:
    """The score the list is ordered by: value at risk.

    Kept as its own function so the definition lives in one place; ties are broken in
    :func:`rank_order` by probability, then customer id.
    """
    return np.asarray(value_at_risk, dtype=np.float64)


def rank_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by priority (value at risk desc, probability desc, customer_id asc), deterministically.

    Missing scores sort last. A stable sort on all three keys gives the same order for the same
    customers however the input rows were partitioned or shuffled.
    """
    work = frame.assign(_priority=priority_score(frame["value_at_risk"].to_numpy(np.float64)))
    return work.sort_values(
        ["_priority", "churn_probability", "customer_id"],
        ascending=[False, False, True],
        kind="mergesort",
        na_position="last",
    ).drop(columns="_priority")


# ---- playbook -----------------------------------------------------------------------
def _rule(rule: Any) -> tuple[str, str, str, str, str]:
    get = rule.get if isinstance(rule, Mapping) else lambda key, default="": getattr(rule, key, default)
    return (str(get("segment", "*")), str(get("reason", "*")), str(get("tier", "*") or "*"),
            str(get("action", "")), str(get("channel", "")))


def _text(values: Sequence[Any] | pd.Series | np.ndarray | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, "", dtype=object)
    return pd.Series(values, dtype=object).fillna("").astype(str).to_numpy()


def recommend_actions(
    segment: Sequence[Any] | pd.Series | np.ndarray,
    reason_group: Sequence[Any] | pd.Series | np.ndarray,
    playbook: Sequence[Any],
    tier: Sequence[Any] | pd.Series | np.ndarray | None = None,
) -> pd.DataFrame:
    """Action and channel per customer: the first playbook rule matching segment, reason group
    and risk tier.

    ``"*"`` in a rule matches anything (including a customer with no segment or no positive
    reason); a rule without a tier matches every tier (and, when no ``tier`` is given, only such
    rules match). Rules are evaluated once per distinct (segment, group, tier), not per
    customer. Customers no rule matches get ``"no playbook rule"`` / ``"none"`` so they are visible.
    """
    seg = _text(segment, 0)
    grp = _text(reason_group, 0)
    tiers = _text(tier, len(seg))
    if not len(seg) == len(grp) == len(tiers):
        raise ValueError("segment, reason_group and tier must have the same length")
    rules = [_rule(r) for r in playbook]
    codes, uniques = pd.factorize(pd.MultiIndex.from_arrays([seg, grp, tiers]))
    actions, channels = [], []
    for s, g, t in uniques:
        for rs, rg, rt, action, channel in rules:
            if rs in ("*", s) and rg in ("*", g) and rt in ("*", t):
                actions.append(action)
                channels.append(channel)
                break
        else:
            actions.append(NO_RULE_ACTION)
            channels.append("none")
    return pd.DataFrame(
        {
            "recommended_action": np.asarray(actions, dtype=object)[codes] if len(codes) else np.array([], dtype=object),
            "channel": np.asarray(channels, dtype=object)[codes] if len(codes) else np.array([], dtype=object),
        }
    )


# ---- per-partition annotation ---------------------------------------------------------
def annotate_partition(
    features: pd.DataFrame,
    probability: np.ndarray,
    reasons: pd.DataFrame,
    *,
    horizon_days: int,
    tier_high: float,
    tier_medium: float,
    contact_fields: Sequence[str] = (),
    value_column: str | None = None,
    spend: SpendWindow | None = None,
) -> pd.DataFrame:
    """One partition's rows of the scores table: id, probability, tier, value at risk, segment,
    reasons, plus any ``contact_fields`` present in ``features`` (dropped later unless enabled).

    ``features`` must carry ``customer_id`` and (optionally) ``segment``; ``reasons`` is the
    output of :func:`serving.reasons.top_reasons` for the same rows.
    """
    p = np.asarray(probability, dtype=np.float64)
    out = pd.DataFrame(
        {
            "customer_id": features["customer_id"].to_numpy(),
            "churn_probability": p,
            "risk_tier": risk_tier(p, tier_high, tier_medium),
            "value_at_risk": value_at_risk(features, p, horizon_days, value_column, spend),
            "segment": (
                features["segment"].astype(object).fillna("").to_numpy()
                if "segment" in features.columns
                else np.full(len(features), "", dtype=object)
            ),
        }
    )
    for col in reasons.columns:
        out[col] = reasons[col].to_numpy()
    for col in contact_fields:
        if col in features.columns and col not in out.columns:
            out[col] = features[col].to_numpy()
    return out


# ---- suppression and capacity -------------------------------------------------------
def recently_contacted(
    customer_id: pd.Series | np.ndarray,
    contacts: pd.DataFrame | None,
    as_of: date | datetime | pd.Timestamp | None,
    cooldown_days: int,
) -> np.ndarray:
    """True for customers with a contact in ``[as_of - cooldown_days, as_of)``.

    Contacts on or after the as-of date are ignored (point in time: on a rerun of a past week
    they had not happened yet).
    """
    ids = pd.Series(customer_id)
    if contacts is None or cooldown_days <= 0 or contacts.empty:
        return np.zeros(len(ids), dtype=bool)
    if as_of is None:
        raise ValueError("as_of is required to suppress recent contacts")
    t = pd.Timestamp(as_of).normalize()
    times = pd.to_datetime(contacts["contact_time"])
    recent = contacts.loc[(times >= t - pd.Timedelta(days=cooldown_days)) & (times < t), "customer_id"]
    return ids.isin(pd.unique(recent)).to_numpy()


def suppress_recent_contacts(
    priority_list: pd.DataFrame,
    contacts: pd.DataFrame | None,
    as_of: date | datetime | pd.Timestamp | None,
    cooldown_days: int,
    mode: Literal["suppress", "flag"] = "suppress",
) -> pd.DataFrame:
    """Mark customers contacted within the cool-down as ``status = "suppressed"``.

    ``mode="suppress"``: they are taken out of the contactable list (moved after the
    contactable rows, no rank, action ``"none: contacted within the cool-down period"``,
    channel ``"none"``) but still reported so the team sees who was held back.
    ``mode="flag"``: they stay in their ranked place with their recommended action; the status
    flags them and the agent decides.
    Adds a boolean ``contactable`` column; the input order is otherwise kept.
    """
    if mode not in ("suppress", "flag"):
        raise ValueError(f"unknown suppression mode {mode!r}; use 'suppress' or 'flag'")
    out = priority_list.copy()
    recent = recently_contacted(out["customer_id"], contacts, as_of, cooldown_days)
    if "status" not in out.columns:
        out["status"] = ""
    out["status"] = out["status"].astype(object)
    out.loc[recent, "status"] = STATUS_SUPPRESSED
    out["contactable"] = ~recent
    if mode == "suppress" and recent.any():
        if "recommended_action" in out.columns:
            out.loc[recent, "recommended_action"] = SUPPRESSED_ACTION
        if "channel" in out.columns:
            out.loc[recent, "channel"] = "none"
        out = pd.concat([out[~recent], out[recent]])
    return out


def within_capacity(contactable: np.ndarray, capacity: int) -> np.ndarray:
    """Rows (in priority order) that make the list: the first ``capacity`` contactable ones,
    plus the non-contactable ones ranked above the last of them (reported, not counted).
    ``capacity = 0`` means no cap."""
    c = np.asarray(contactable, dtype=bool)
    if capacity <= 0:
        return np.ones(len(c), dtype=bool)
    before = np.cumsum(c) - c  # contactable rows strictly above each row
    return before < capacity


# ---- the list -----------------------------------------------------------------------
def _serving(settings: Any) -> Any:
    return getattr(settings, "serving", settings)


def build_priority_list(
    scored: pd.DataFrame,
    settings: Any,
    contacts: pd.DataFrame | None = None,
    previous_list: pd.DataFrame | None = None,
    as_of: date | datetime | pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This week's priority list and the customers who dropped off last week's list.

    ``scored``: all scored customers (concatenated partitions of :func:`annotate_partition`):
    ``customer_id, churn_probability, value_at_risk, segment, reason_1..3, reason_group_1``
    (``risk_tier`` is derived when absent) plus contact fields.
    ``settings``: the ``Settings`` object (or its ``serving`` section).
    ``as_of``: needed for suppression; defaults to ``scored["as_of"]`` when present.

    Steps: keep customers with probability >= ``min_probability``; rank by priority; hold back
    those contacted within ``cooldown_days`` (they do not use capacity); cut at ``capacity``
    contactable customers; status ``new`` / ``still on`` against ``previous_list``;
    recommended action from the playbook; contact fields only if ``include_contact_fields``.
    Probabilities are rounded to 4 decimals and values at risk to 2 (people read them; ranking
    uses the unrounded values).
    """
    cfg = _serving(settings)
    if as_of is None and "as_of" in scored.columns and len(scored):
        as_of = pd.Timestamp(scored["as_of"].iloc[0])
    if contacts is not None and cfg.cooldown_days > 0 and as_of is None:
        raise ValueError("as_of is required to suppress recent contacts")

    eligible = scored[scored["churn_probability"].to_numpy(np.float64) >= cfg.min_probability]
    ranked = rank_order(eligible)
    recent = recently_contacted(ranked["customer_id"], contacts, as_of, cfg.cooldown_days)
    chosen = ranked[within_capacity(~recent, cfg.capacity)].reset_index(drop=True)
    chosen = _with_actions(chosen, cfg)
    previous_ids = (
        pd.unique(previous_list["customer_id"]) if previous_list is not None and len(previous_list) else []
    )
    was_on = chosen["customer_id"].isin(previous_ids).to_numpy()
    chosen["status"] = np.where(was_on, STATUS_STILL_ON, STATUS_NEW).astype(object)
    # Same cool-down test as above, now on the chosen rows only, applying the suppression mode.
    chosen = suppress_recent_contacts(chosen, contacts, as_of, cfg.cooldown_days, cfg.suppression)
    chosen = _ranked_and_rounded(chosen, cfg.suppression)

    columns = list(LIST_COLUMNS)
    if cfg.include_contact_fields:
        columns += [c for c in cfg.contact_fields if c in chosen.columns and c not in columns]
    priority_list = chosen[columns].reset_index(drop=True)
    dropped = dropped_customers(previous_list, priority_list, scored, cfg.min_probability)
    return priority_list, dropped


def _with_actions(chosen: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """Tier (when absent), playbook action and channel, and empty reason columns when absent."""
    if "risk_tier" not in chosen.columns:
        chosen["risk_tier"] = risk_tier(chosen["churn_probability"], cfg.tier_high, cfg.tier_medium)
    group = chosen["reason_group_1"] if "reason_group_1" in chosen.columns else np.full(len(chosen), "")
    segment = chosen["segment"] if "segment" in chosen.columns else np.full(len(chosen), "")
    actions = recommend_actions(segment, group, cfg.playbook, chosen["risk_tier"])
    chosen["recommended_action"] = actions["recommended_action"].to_numpy()
    chosen["channel"] = actions["channel"].to_numpy()
    for col in ("segment", "reason_1", "reason_2", "reason_3"):
        if col not in chosen.columns:
            chosen[col] = ""
    return chosen


def _ranked_and_rounded(chosen: pd.DataFrame, suppression: str) -> pd.DataFrame:
    """Ranks 1..k for the rows the team works (all rows in ``flag`` mode), then rounding for people:
    probabilities to 4 decimals, values at risk to 2 (ranking used the unrounded values)."""
    ranked_rows = chosen["contactable"].to_numpy() if suppression == "suppress" else np.ones(len(chosen), bool)
    rank = pd.array(np.full(len(chosen), pd.NA), dtype="Int64")
    rank[ranked_rows] = np.arange(1, int(ranked_rows.sum()) + 1)
    chosen["rank"] = rank
    chosen["churn_probability"] = chosen["churn_probability"].astype(np.float64).round(4)
    chosen["value_at_risk"] = chosen["value_at_risk"].astype(np.float64).round(2)
    return chosen


def team_list(priority_list: pd.DataFrame) -> pd.DataFrame:
    """The list the retention team works from: every row except the control group.

    Holdout customers stay in ``priority_list.parquet`` and ``scores.parquet`` (the record the
    report cards are computed from) but not in the CSV, the list table or the report's list:
    an agent who sees a high-risk customer marked "do not contact" may call anyway, and one such
    call blurs the comparison the control group exists for.
    """
    if "status" not in priority_list.columns:
        return priority_list
    return priority_list.loc[~priority_list["status"].isin(HELD_BACK).to_numpy()].reset_index(drop=True)


def dropped_customers(
    previous_list: pd.DataFrame | None,
    priority_list: pd.DataFrame,
    scored: pd.DataFrame,
    min_probability: float,
) -> pd.DataFrame:
    """Customers on last week's list who are not on this week's, with this week's probability
    and why: ``not scored`` (no longer in the population, e.g. churned or filtered out),
    ``below min_probability`` or ``below capacity cut-off``."""
    if previous_list is None or previous_list.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DROPPED_COLUMNS})
    prev = previous_list.drop_duplicates("customer_id")
    gone = prev[~prev["customer_id"].isin(priority_list["customer_id"])]
    probs = scored.drop_duplicates("customer_id").set_index("customer_id")["churn_probability"]
    p = gone["customer_id"].map(probs).astype(np.float64)
    why = np.where(
        p.isna(), "not scored", np.where(p < min_probability, "below min_probability", "below capacity cut-off")
    )
    return pd.DataFrame(
        {
            "customer_id": gone["customer_id"].to_numpy(),
            "previous_rank": (gone["rank"] if "rank" in gone.columns else pd.Series(pd.NA, index=gone.index)).astype("Int64").to_numpy(),
            "previous_status": (gone["status"] if "status" in gone.columns else pd.Series("", index=gone.index)).astype(object).to_numpy(),
            "churn_probability": p.round(4).to_numpy(),
            "why": why.astype(object),
        }
    )


def _listed_counts(scored: pd.DataFrame, priority_list: pd.DataFrame, column: str, top: int | None = None) -> dict[str, int]:
    """Counts of ``scored[column]`` over the listed customers ("" counts as "none")."""
    if column not in scored.columns:
        return {}
    counts = scored.loc[scored["customer_id"].isin(priority_list["customer_id"]), column].replace("", "none").value_counts()
    if top is not None:
        return {str(k): int(v) for k, v in counts.head(top).items()}
    return {str(k): int(v) for k, v in sorted(counts.items())}


def _drift_summary(drift: pd.DataFrame | None) -> dict[str, Any]:
    if drift is None or not len(drift):
        return {"drift": {}, "drift_features": []}
    return {
        "drift": {str(k): int(v) for k, v in sorted(drift["status"].value_counts().items())},
        "drift_features": [{"feature": str(r.feature), "psi": round(float(r.psi), 6), "status": str(r.status)}
                           for r in drift.sort_values("psi", ascending=False).itertuples(index=False)],
    }


def _sorted_counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(values.value_counts().items())}


@dataclass(frozen=True)
class Population:
    """What the summary needs of every scored customer, without their rows: probabilities (in
    customer order, so sums come out as from the whole table), list statuses (categorical: one
    byte a customer) and tier counts. Built from a table (:meth:`of`) or from consecutive slices
    of one (:meth:`concat`)."""

    probability: np.ndarray
    status: pd.Categorical
    tiers: dict[str, int]

    @classmethod
    def of(cls, scored: pd.DataFrame, tier_high: float = 0.5, tier_medium: float = 0.2) -> Population:
        """``risk_tier`` is derived from the probabilities (with these cut-offs) when absent."""
        p = scored["churn_probability"].to_numpy(np.float64)
        tiers = scored["risk_tier"] if "risk_tier" in scored.columns else pd.Series(risk_tier(p, tier_high, tier_medium))
        status = scored["status"] if "status" in scored.columns else pd.Series("", index=scored.index)
        return cls(p, pd.Categorical(status.astype(object)), {str(k): int(v) for k, v in tiers.value_counts().items()})

    @classmethod
    def concat(cls, parts: Iterable[Population]) -> Population:
        parts = list(parts)
        tiers: dict[str, int] = {}
        for part in parts:
            for tier, n in part.tiers.items():
                tiers[tier] = tiers.get(tier, 0) + n
        status = (pd.api.types.union_categoricals([p.status for p in parts]) if parts
                  else pd.Categorical(np.empty(0, object)))
        return cls(np.concatenate([p.probability for p in parts] or [np.empty(0)]), status, tiers)


def build_summary(
    scored: pd.DataFrame,
    priority_list: pd.DataFrame,
    dropped: pd.DataFrame,
    drift: pd.DataFrame | None,
    settings: Any,
    as_of: date | datetime | pd.Timestamp,
    extra: Mapping[str, Any] | None = None,
    population: Population | None = None,
) -> dict[str, Any]:
    """Plain-data summary for ``summary.json`` and the report headline (no wall-clock times).

    ``n_contactable`` counts the customers the team may contact: neither suppressed nor in a
    control group (``n_holdout`` this list's, ``n_held_earlier`` an earlier list's).
    ``extra`` is merged in (e.g. model name/version, the run time if the caller wants one).
    ``population``: every scored customer when ``scored`` holds only the listed ones' rows (the
    Dask engine's); by default ``scored`` is everyone.
    """
    cfg = _serving(settings)
    status = priority_list["status"].value_counts()
    everyone = population or Population.of(scored, cfg.tier_high, cfg.tier_medium)
    held = priority_list["status"].isin([STATUS_SUPPRESSED, *HELD_BACK])
    summary: dict[str, Any] = {
        "as_of": pd.Timestamp(as_of).date().isoformat(),
        "n_scored": len(everyone.probability),
        "n_listed": int(len(priority_list)),
        "n_contactable": int((~held).sum()),
        "n_new": int(status.get(STATUS_NEW, 0)),
        "n_still_on": int(status.get(STATUS_STILL_ON, 0)),
        "n_suppressed": int(status.get(STATUS_SUPPRESSED, 0)),
        "n_holdout": int(status.get(STATUS_HOLDOUT, 0)),
        "n_held_earlier": int(status.get(STATUS_HELD_EARLIER, 0)),
        "n_dropped": len(dropped),
        "capacity": int(cfg.capacity),
        "min_probability": float(cfg.min_probability),
        "mean_probability": (round(float(pd.Series(everyone.probability).mean()), 6)
                             if len(everyone.probability) else None),
        "list_value_at_risk": round(float(priority_list["value_at_risk"].sum()), 2),
        "tiers_scored": dict(sorted(everyone.tiers.items())),
        "tiers_listed": _sorted_counts(priority_list["risk_tier"]),
        "segments_listed": _sorted_counts(priority_list["segment"]),
        "reason_groups_listed": _listed_counts(scored, priority_list, "reason_group_1"),
        **_drift_summary(drift),
        "top_reasons_listed": _listed_counts(scored, priority_list, "reason_feature_1", top=10),
    }
    if extra:
        summary.update(dict(extra))
    return summary
