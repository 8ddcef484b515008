"""Stable customer segments from recency and value, fitted once at training.

The boundaries (quantiles of the training snapshot) are stored with the model, so "champions"
means the same thing every week until the next model, and any partition of customers can be
segmented on its own. The rules are deliberately few and readable: a retention manager should
be able to say why a customer is in a segment.

Rules, first match wins (R = days since last activity, V = spend in the longest window, or
activity count when there is no spend, or the configured monthly value column):
- new: tenure under 90 days
- champions: R in the most recent third and V in the top third
- at risk: R in the least recent third and V in the top third (valuable, gone quiet)
- loyal: V in the top third
- low value: V in the bottom third
- hibernating: R in the least recent third
- regular: everybody else
Without any activity history the segments are value thirds only (high/mid/low value), or one
segment, "all customers", without a value either; the default playbook then lets the risk tier
choose the action (``features.settings``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from churnflow.features.schema import FeatureSchema

NEW_CUSTOMER_DAYS = 90
SEGMENT_MEANINGS = {
    "new": f"customer for less than {NEW_CUSTOMER_DAYS} days",
    "champions": "recently active and among the most valuable third",
    "at risk": "among the most valuable third but long inactive",
    "loyal": "among the most valuable third",
    "low value": "among the least valuable third",
    "hibernating": "long inactive, not high value",
    "regular": "everybody else",
    "high value": "top third by monthly value",
    "mid value": "middle third by monthly value",
    "all customers": "no activity history or value column (features.value_column) to segment on",
}


def fit_segments(features: pd.DataFrame, schema: FeatureSchema, value_column: str = "") -> dict[str, Any]:
    """Quantile boundaries from the training snapshot (JSON-ready, stored with the model).

    Which feature is value, recency and tenure comes from the schema's roles
    (``FeatureSchema.value_feature``); ``value_column`` is accepted for older callers and
    ignored (the schema recorded ``features.value_column`` as the ``monthly_value`` role).
    """
    del value_column
    value = schema.value_feature()
    recency = schema.feature_for("recency")
    spec: dict[str, Any] = {"value_feature": value, "recency_feature": recency,
                            "tenure_feature": schema.feature_for("tenure"), "meanings": SEGMENT_MEANINGS}
    if value is not None:
        v = features[value].astype("float64")
        spec["value_cuts"] = [float(v.quantile(1 / 3)), float(v.quantile(2 / 3))]
    if recency is not None:
        r = features[recency].astype("float64")
        spec["recency_cuts"] = [float(r.quantile(1 / 3)), float(r.quantile(2 / 3))]
    return spec


def assign_segments(features: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """Segment name of every row (vectorised, works on any partition)."""
    n = len(features)
    value = spec.get("value_feature")
    if value is None:
        return np.full(n, "all customers", dtype=object)
    v = features[value].astype("float64").to_numpy()
    v_low, v_high = spec["value_cuts"]
    high_v = v >= v_high
    low_v = np.nan_to_num(v, nan=-np.inf) <= v_low
    if "recency_cuts" not in spec:
        return np.select([high_v, low_v], ["high value", "low value"], default="mid value").astype(object)
    # Models saved before roles were recorded name no recency/tenure feature: theirs were these.
    r = features[spec.get("recency_feature", "recency_days")].astype("float64").to_numpy()
    r_recent, r_old = spec["recency_cuts"]
    recent = r <= r_recent
    old = np.nan_to_num(r, nan=np.inf) > r_old
    tenure_feature = spec.get("tenure_feature", "tenure_days")
    tenure = (features[tenure_feature].astype("float64").to_numpy() if tenure_feature in features
              else np.full(n, np.inf))
    new = np.nan_to_num(tenure, nan=np.inf) < NEW_CUSTOMER_DAYS
    conditions = [new, recent & high_v, old & high_v, high_v, low_v, old]
    names = ["new", "champions", "at risk", "loyal", "low value", "hibernating"]
    return np.select(conditions, names, default="regular").astype(object)
