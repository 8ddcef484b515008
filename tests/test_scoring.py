"""Chunked scoring: partitions give the same scores as one pass, and value at risk without spend."""

from __future__ import annotations

import dataclasses

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
from churnflow.training.churn_model import model_frame

AS_OF = pd.Timestamp("2026-09-01")


def _bundle(tables, settings) -> ModelBundle:
    schema = infer_schema(tables, settings)
    feats = build_features(tables, AS_OF - pd.Timedelta(days=90), settings, schema)
    rng = np.random.default_rng(0)
    label = (rng.random(len(feats)) < 0.3).astype(int)
    dm = xgb.DMatrix(model_frame(feats, schema.features, schema.categorical_levels), label=label, enable_categorical=True)
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
    assert listed["rank"].dropna().tolist() == list(range(1, 37))  # serving.capacity less the 10 % holdout
    assert (listed["reason_1"] != "").all()
    assert set(first.scores["model_version"]) == {"3"} and first.scores["customer_id"].is_monotonic_increasing
    assert first.summary["n_scored"] == len(first.scores) and first.summary["model_version"] == "3"
    assert first.summary["n_listed"] == len(listed) and first.summary["n_new"] == len(listed) - 4
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
    # still on, unless drawn into this date's control group
    assert second.priority_list.loc[still, "status"].isin(["still on", "holdout"]).sum() == 10
    assert (second.priority_list.loc[still, "status"] == "still on").sum() >= 7
    assert second.dropped["customer_id"].tolist() == [-1] and second.dropped["why"].tolist() == ["not scored"]


def test_score_week_holds_back_a_control_group_the_team_never_sees(tmp_path) -> None:
    from churnflow.serving.publish import standard_writers
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    first = score_week(tables, AS_OF, bundle, "1", settings)
    listed, summary = first.priority_list, first.summary
    held = listed.loc[listed["status"] == "holdout", "customer_id"]
    assert len(held) == 4 and listed.loc[listed["status"] == "holdout", "rank"].isna().all()  # 10 % of 40
    assert summary["n_holdout"] == 4 and summary["n_contactable"] == 36 and summary["holdout_share"] == 0.1
    assert "control group" in summary["holdout_why"] and "control group" in first.report_html
    assert not first.team_list["customer_id"].isin(held).any() and len(first.team_list) == len(listed) - 4
    status = first.scores.set_index("customer_id")["status"]
    assert (status.loc[held] == "holdout").all() and (status == "unlisted").sum() == len(status) - len(listed)

    again = score_week(tables, AS_OF, bundle, "1", settings)  # a rerun holds back the same customers
    assert again.priority_list.loc[again.priority_list["status"] == "holdout", "customer_id"].tolist() == held.tolist()

    written = {}
    for name, writer in standard_writers(first.scores, listed, summary, first.report_html).items():
        if name.endswith(".csv") or name.endswith(".parquet"):
            writer(path := tmp_path / name)
            written[name] = pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
    assert not written["priority_list.csv"]["customer_id"].isin(held).any()
    assert written["priority_list.parquet"]["customer_id"].isin(held).sum() == 4


def test_an_open_control_group_of_an_earlier_list_is_not_contacted() -> None:
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    first_day = AS_OF - pd.Timedelta(days=90)
    first = score_week(tables, first_day, bundle, "1", settings)
    held = first.priority_list.loc[first.priority_list["status"] == "holdout", "customer_id"].tolist()
    earlier = {str(first_day.date()): held}
    week2 = score_week(tables, first_day + pd.Timedelta(days=7), bundle, "1", settings, earlier_holdouts=earlier)
    again = week2.priority_list.set_index("customer_id")
    on_list = [c for c in held if c in again.index]
    assert on_list and (again.loc[on_list, "status"] == "holdout, earlier list").all()
    assert week2.summary["n_held_earlier"] == len(on_list)
    after = score_week(tables, AS_OF, bundle, "1", settings, earlier_holdouts=earlier)  # horizon passed: free again
    assert after.summary["n_held_earlier"] == 0 and after.priority_list["customer_id"].isin(held).any()


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


def test_a_numeric_input_turned_text_is_a_schema_error_even_when_forced() -> None:
    """A type change (a fee exported as "35.99 EUR") would make the input all-unknown: refused."""
    import pytest

    from churnflow.features.schema import SchemaMismatchError
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    texts = tables.customers["monthly_fee"].map(lambda v: f"{v:.2f} EUR")
    changed = type(tables)(customers=tables.customers.assign(monthly_fee=texts), events=tables.events,
                           contacts=None, end_date=tables.end_date)
    with pytest.raises(SchemaMismatchError, match=r"column 'monthly_fee' held numbers at training, but 554 of 554 "
                                                  r"values today are not \(e\.g\. '\d+\.\d\d EUR'\)"):
        score_week(changed, AS_OF, bundle, "1", settings, force=True)


def test_a_few_words_among_numbers_are_scored_as_unknown_and_said() -> None:
    """'forty' among ages: the run goes on, those customers score as if the value were unknown,
    and the week's warnings (printed, in the summary and the report) say so, with an example."""
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    fees = tables.customers["monthly_fee"].map(lambda v: f"{v:.2f}").astype("string")
    fees.iloc[[3, 10]] = ["forty", "n/a"]
    changed = type(tables)(customers=tables.customers.assign(monthly_fee=fees), events=tables.events,
                           contacts=None, end_date=tables.end_date)
    week = score_week(changed, AS_OF, bundle, "1", settings)
    said = [w for w in week.warnings if "monthly_fee" in w]
    assert said == [w for w in week.summary["warnings"] if "monthly_fee" in w]
    assert len(said) == 1 and "2 of 554 values are not numbers (e.g. 'forty')" in said[0], said
    assert "monthly_fee" in week.report_html and "scored as if the value were unknown" in week.report_html
    assert not any("monthly_fee" in w for w in score_week(tables, AS_OF, bundle, "1", settings).warnings)


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
    dm = xgb.DMatrix(model_frame(feats, schema.features, schema.categorical_levels), label=label, enable_categorical=True)
    booster = xgb.train({"max_depth": 2, "nthread": 1, "seed": 0}, dm, num_boost_round=5)
    bundle = ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=schema, best_iteration=4,
                         segments=fit_segments(feats, schema, settings.features.value_column))
    whole = score_week(tables, AS_OF, bundle, "1", settings).scores
    parts = score_week(tables, AS_OF, bundle, "1", _settings(chunk_size=37, capacity=40)).scores
    pd.testing.assert_frame_equal(parts, whole)


def test_cli_summary_names_top_reasons_by_phrase() -> None:
    from rich.console import Console

    from churnflow.features.dictionary import dictionary_records
    from churnflow.flows.summaries import print_score_summary, reason_phrases
    from churnflow.serving.weekly import score_week

    _, settings, tables, bundle = _week_setup()
    bundle = dataclasses.replace(bundle, dictionary=dictionary_records(bundle.schema))  # as training saves it
    outputs = score_week(tables, AS_OF, bundle, "1", settings)
    top = outputs.summary["top_reasons_listed"]
    phrases = reason_phrases(bundle.dictionary, top)
    assert phrases and all("{" not in p for p in phrases.values())
    console = Console(record=True, width=300, color_system=None)
    print_score_summary(console, {"summary": outputs.summary, "folder": "/tmp/x", "as_of": "2026-09-01",
                                  "reason_phrases": phrases})
    printed = console.export_text()
    line = next(row for row in printed.splitlines() if row.startswith("top reasons:"))
    main = max(top, key=top.get)
    assert f"{phrases[main]} ({top[main]:,})" in line and f"{main} (" not in line
