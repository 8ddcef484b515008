"""Chunked scoring: partitions give the same scores as one pass, and value at risk without spend."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from churnflow.features.build import build_features, infer_schema
from churnflow.features.contracts import validate_tables
from churnflow.features.demo import generate_demo_data
from churnflow.features.segments import fit_segments
from churnflow.features.settings import Settings
from churnflow.serving.score import score_customers
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator

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


# ---- score_week: one week's outputs -------------------------------------------------------------
def _week_setup(tmp_path=None):
    data = generate_demo_data(600, seed=5)
    settings = _settings(chunk_size=250, capacity=40)
    tables = validate_tables(data.customers, data.events, None, settings)
    return data, settings, tables, _bundle(tables, settings)


def test_score_week_gives_the_list_summary_and_report_deterministically() -> None:
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    first = score_week(tables, AS_OF, bundle, "3", settings)
    again = score_week(tables, AS_OF, bundle, "3", settings)
    pd.testing.assert_frame_equal(first.priority_list, again.priority_list)
    assert first.summary == again.summary and first.report_html == again.report_html

    assert first.as_of == AS_OF and first.n_partitions >= 2
    listed = first.priority_list
    assert listed["rank"].dropna().tolist() == list(range(1, 41))  # serving.capacity
    assert (listed["reason_1"] != "").all()
    assert set(first.scores["model_version"]) == {"3"} and first.scores["customer_id"].is_monotonic_increasing
    assert first.summary["n_scored"] == len(first.scores) and first.summary["model_version"] == "3"
    assert first.summary["n_listed"] == len(listed) and first.summary["n_new"] == len(listed)
    assert "<html" in first.report_html.lower()


def test_score_week_sees_nothing_on_or_after_the_as_of_date() -> None:
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    times = tables.events["event_time"]
    later = tables.events.assign(event_time=AS_OF + (times - times.min()))  # all on or after the as-of date
    noisy = type(tables)(customers=tables.customers, events=pd.concat([tables.events, later]).sort_values(
        ["customer_id", "event_time"], kind="stable"), contacts=None, end_date=tables.end_date + pd.Timedelta(days=400))
    clean = score_week(tables, AS_OF, bundle, "1", settings)
    with_future = score_week(noisy, AS_OF, bundle, "1", settings)
    pd.testing.assert_frame_equal(clean.priority_list, with_future.priority_list)


def test_score_week_statuses_against_last_weeks_list() -> None:
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    first = score_week(tables, AS_OF, bundle, "1", settings)
    previous = first.priority_list.head(10)
    gone = pd.DataFrame({"customer_id": [-1], "rank": [1], "status": ["new"]})
    second = score_week(tables, AS_OF, bundle, "1", settings, previous_list=pd.concat([previous, gone]))
    still = second.priority_list["customer_id"].isin(previous["customer_id"])
    assert (second.priority_list.loc[still, "status"] == "still on").sum() == 10
    assert second.dropped["customer_id"].tolist() == [-1] and second.dropped["why"].tolist() == ["not scored"]


def test_missing_model_column_is_a_schema_error_even_when_forced() -> None:
    import pytest

    from churnflow.features.schema import SchemaMismatchError
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    assert "monthly_fee" in bundle.schema.numeric_attributes
    lacking = type(tables)(customers=tables.customers.drop(columns="monthly_fee"), events=tables.events,
                           contacts=None, end_date=tables.end_date)
    with pytest.raises(SchemaMismatchError, match=r"customers.* has no column 'monthly_fee'.*--force"):
        score_week(lacking, AS_OF, bundle, "1", settings, force=True)


def test_an_as_of_before_any_data_names_the_date_and_the_fix() -> None:
    import pytest

    from churnflow.serving.score import NoActiveCustomersError
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    with pytest.raises(NoActiveCustomersError, match=r"no active customers at 2001-01-01.*--as-of"):
        score_week(tables, pd.Timestamp("2001-01-01"), bundle, "1", settings)


def test_rescoring_an_earlier_week_does_not_depend_on_the_partitions() -> None:
    """A model's BG/NBD parameters hold from their fit date; an earlier week (AS_OF is two months
    before it) is scored with parameters fitted once on every customer active then, not by each
    partition on its own customers."""
    from churnflow.serving.weekly import score_week

    data, settings, tables, _ = _week_setup()
    schema = infer_schema(tables, settings)
    assert pd.Timestamp(schema.btyd["as_of"]) > AS_OF and "p_alive" in schema.features
    feats = build_features(tables, AS_OF - pd.Timedelta(days=90), settings, schema)
    label = (feats["p_alive"] < feats["p_alive"].median()).astype(int)  # the model must use p_alive
    dm = xgb.DMatrix(schema.to_model_frame(feats), label=label, enable_categorical=True)
    booster = xgb.train({"max_depth": 2, "nthread": 1, "seed": 0}, dm, num_boost_round=5)
    bundle = ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=schema, best_iteration=4,
                         segments=fit_segments(feats, schema, settings.features.value_column))
    whole = score_week(tables, AS_OF, bundle, "1", settings).scores
    parts = score_week(tables, AS_OF, bundle, "1", _settings(chunk_size=37, capacity=40)).scores
    pd.testing.assert_frame_equal(parts, whole)
