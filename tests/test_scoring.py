"""Chunked scoring: partitions give the same scores as one pass, and value at risk without spend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from features.build import build_features, infer_schema
from features.contracts import validate_tables
from features.demo import generate_demo_data
from features.segments import fit_segments
from features.settings import Settings
from serving.score import score_customers
from training.bundle import ModelBundle
from training.calibration import Calibrator

AS_OF = pd.Timestamp("2026-09-01")


def _bundle(tables, settings) -> ModelBundle:
    schema = infer_schema(tables, settings)
    feats = build_features(tables, AS_OF - pd.Timedelta(days=90), settings, schema)
    rng = np.random.default_rng(0)
    label = (rng.random(len(feats)) < 0.3).astype(int)
    dm = xgb.DMatrix(schema.to_model_frame(feats), label=label, enable_categorical=True)
    booster = xgb.train({"max_depth": 3, "nthread": 1, "seed": 0}, dm, num_boost_round=5)
    return ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=schema, best_iteration=4,
                       segments=fit_segments(feats, schema, settings.features.value_column))


def _settings(**serving) -> Settings:
    return Settings(data={"contacts": "", "columns": {"amount": "", "event_type": "event_type",
                                                      "churn_time": "churn_time",
                                                      "pii": ["name", "email", "phone", "address"]}},
                    features={"value_column": "monthly_fee"}, serving=serving)


def test_partitions_score_like_one_pass_and_value_uses_monthly_fee_without_spend() -> None:
    data = generate_demo_data(600, seed=5)
    events = data.events.drop(columns="amount")
    one = _settings(chunk_size=100_000)
    tables = validate_tables(data.customers, events, None, one)
    bundle = _bundle(tables, one)
    assert not bundle.schema.has_amount

    whole = score_customers(tables, AS_OF, bundle, one)
    parts = score_customers(tables, AS_OF, bundle, _settings(chunk_size=37))
    assert parts.n_partitions > 5 and whole.n_partitions == 1
    pd.testing.assert_frame_equal(parts.scored.sort_values("customer_id").reset_index(drop=True),
                                  whole.scored.sort_values("customer_id").reset_index(drop=True))

    scored = whole.scored.set_index("customer_id")
    fee = data.customers.set_index("customer_id").loc[scored.index, "monthly_fee"].astype(float)
    expected = fee * 90 / 30 * scored["churn_probability"]
    np.testing.assert_allclose(scored["value_at_risk"], expected, rtol=1e-9)
