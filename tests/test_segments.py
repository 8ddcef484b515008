"""Segments pinned rule by rule on hand-made rows, and all of them on demo data.

Rules (features/segments.py), first match wins: new (tenure < 90 days), champions (recent and
high value), at risk (long inactive and high value), loyal (high value), low value, hibernating
(long inactive), regular. Without activity history: value thirds. The playbook keys on these
names, so each rule must be seen to fire.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churnflow.features.build import build_features, infer_schema
from churnflow.features.contracts import validate_tables
from churnflow.features.demo import generate_demo_data
from churnflow.features.schema import FeatureSchema
from churnflow.features.segments import (
    NEW_CUSTOMER_DAYS,
    SEGMENT_MEANINGS,
    assign_segments,
    fit_segments,
)
from churnflow.features.settings import Settings

SPEC = {"value_feature": "monetary_365d", "recency_feature": "recency_days", "tenure_feature": "tenure_days",
        "value_cuts": [10.0, 20.0], "recency_cuts": [30.0, 60.0]}

ROWS = [  # (tenure, recency, value, expected segment)
    (NEW_CUSTOMER_DAYS - 1, 5.0, 99.0, "new"),  # new beats everything
    (NEW_CUSTOMER_DAYS, 5.0, 99.0, "champions"),  # 90 days is no longer new
    (400, 30.0, 20.0, "champions"),  # both boundaries inclusive: R <= 30, V >= 20
    (400, 60.5, 25.0, "at risk"),
    (400, np.nan, 25.0, "at risk"),  # never active: the least recent there is
    (400, 45.0, 25.0, "loyal"),
    (400, 60.0, 25.0, "loyal"),  # R = 60 is not beyond the old cut
    (400, 5.0, 10.0, "low value"),  # V <= 10, even when recent
    (400, 90.0, np.nan, "low value"),  # no spend recorded
    (400, 90.0, 15.0, "hibernating"),
    (400, 45.0, 15.0, "regular"),
    (400, 5.0, 15.0, "regular"),
    (np.nan, 45.0, 15.0, "regular"),  # unknown tenure is not new
]


def _frame(rows: list[tuple[float, float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame({"tenure_days": [r[0] for r in rows], "recency_days": [r[1] for r in rows],
                         "monetary_365d": [r[2] for r in rows]})


@pytest.mark.parametrize("row", ROWS, ids=[f"{r[3]}-{i}" for i, r in enumerate(ROWS)])
def test_each_rule(row: tuple[float, float, float, str]) -> None:
    assert assign_segments(_frame([row]), SPEC).tolist() == [row[3]]


def test_rules_on_one_frame_and_all_named() -> None:
    out = assign_segments(_frame(ROWS), SPEC)
    assert out.tolist() == [r[3] for r in ROWS]
    assert set(out) <= set(SEGMENT_MEANINGS)


def test_value_thirds_without_activity_history() -> None:
    spec = {"value_feature": "monthly_fee", "value_cuts": [10.0, 20.0]}
    frame = pd.DataFrame({"monthly_fee": [25.0, 20.0, 15.0, 10.0, 5.0, np.nan]})
    assert assign_segments(frame, spec).tolist() == [
        "high value", "high value", "mid value", "low value", "low value", "low value"]
    assert assign_segments(frame, {"value_feature": None}).tolist() == ["all customers"] * 6


def test_fit_segments_cuts_are_training_thirds() -> None:
    schema = FeatureSchema(features=["tenure_days", "recency_days", "frequency_365d", "monetary_365d"],
                           windows_days=[365])
    frame = pd.DataFrame({"tenure_days": [500.0] * 7, "recency_days": [0.0, 3, 6, 9, 12, 15, 18],
                          "frequency_365d": [1.0] * 7, "monetary_365d": [10.0, 20, 30, 40, 50, 60, 70]})
    spec = fit_segments(frame, schema)
    assert spec["value_feature"] == "monetary_365d" and spec["recency_feature"] == "recency_days"
    assert spec["value_cuts"] == [30.0, 50.0] and spec["recency_cuts"] == [6.0, 12.0]
    no_spend = FeatureSchema(features=["recency_days", "frequency_365d"], windows_days=[365], has_amount=False)
    assert fit_segments(frame, no_spend)["value_feature"] == "frequency_365d"


def test_every_segment_occurs_on_demo_data() -> None:
    s = Settings(data={"contacts": "", "columns": {"event_type": "event_type", "churn_time": "churn_time",
                                                   "pii": ["name", "email", "phone", "address"]}})
    data = generate_demo_data(3000, seed=5)
    tables = validate_tables(data.customers, data.events, None, s)
    schema = infer_schema(tables, s)
    train = build_features(tables, pd.Timestamp("2026-06-01"), s, schema)
    spec = fit_segments(train, schema)
    later = build_features(tables, pd.Timestamp("2026-08-01"), s, schema)
    counts = pd.Series(assign_segments(later, spec)).value_counts()
    assert set(counts.index) == {"new", "champions", "at risk", "loyal", "low value", "hibernating", "regular"}
    assert counts.min() >= 10, counts.to_dict()
