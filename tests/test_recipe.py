"""The training recipe runs from a Python session (no Prefect, no MLflow) and returns a complete,
refitted model whose drift reference describes the customers it will score first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnflow.features.build import snapshot_as_of
from churnflow.features.contracts import cut_at, load_tables
from churnflow.features.settings import load_settings
from churnflow.serving.score import score_customers
from churnflow.training.errors import TrainingDataError
from churnflow.training.evaluate import Evaluation, best_baseline
from churnflow.training.recipe import TrainedModel, train_model
from tests.conftest import REPO, write_project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("recipe") / "project", n_customers=600)


def test_train_model_without_prefect_gives_a_complete_refitted_model(project: Path, tmp_path: Path) -> None:
    settings = load_settings(project, training={"n_trials": 2, "max_boost_rounds": 60})
    tables = load_tables(settings)

    model = train_model(tables, settings, plot_dir=tmp_path / "plots")

    assert isinstance(model, TrainedModel)
    bundle = model.bundle
    assert bundle.segments and bundle.reference["features"] and bundle.dictionary
    assert bundle.metrics["test"]["roc_auc"] == model.evaluation.metrics["roc_auc"]
    assert bundle.metrics["family"] == model.choice.family == bundle.family
    assert model.evaluation.metrics["roc_auc"] > 0.6
    assert len(model.test) == model.evaluation.n_test
    assert set(model.importance["feature"]) == set(bundle.schema.features)
    assert {name for name, _, _ in model.checks} >= {"pii_not_features", "invariant_to_pii"}
    assert all(path.exists() for path in model.plots.values()) and "gains" in model.plots
    assert model.fingerprint == tables.fingerprint()
    assert model.tuning.n_run_now == 2

    # rolling origin: three validation dates; the registered model used every label up to the test date
    assert len(model.plan.valid_dates) == 3 and len(model.plan.folds) == 3
    assert bundle.fitted_through == model.plan.test.date().isoformat()
    assert pd.Timestamp(bundle.fitted_through) + pd.Timedelta(days=settings.churn.horizon_days) <= \
        tables.end_date + pd.Timedelta(days=1)

    # the drift reference is today's population: scoring at the model's as-of date shows no drift
    as_of = snapshot_as_of(tables)
    drift = score_customers(tables, as_of, bundle, settings).drift
    assert len(drift) == len(bundle.schema.features) + 1
    assert drift["psi"].max() < 1e-6, drift.sort_values("psi").tail()

    # the same data resume the same study: nothing is tuned again
    again = train_model(tables, settings)
    assert again.tuning.n_run_now == 0
    assert again.tuning.study.study_name == model.tuning.study.study_name
    np.testing.assert_allclose(again.bundle.predict_proba(model.test), bundle.predict_proba(model.test))


def test_an_as_of_before_any_data_is_named_before_tuning(project: Path) -> None:
    settings = load_settings(project, training={"n_trials": 1})
    tables = cut_at(load_tables(settings), pd.Timestamp("2000-01-01"))
    with pytest.raises(TrainingDataError, match="no events before .*later --as-of"):
        train_model(tables, settings)


def test_labels_of_one_class_are_named_before_tuning(project: Path, tmp_path: Path) -> None:
    customers = pd.DataFrame({"customer_id": range(40), "plan": ["a", "b"] * 20, "churned": 0})
    customers.to_csv(tmp_path / "customers.csv", index=False)
    config = tmp_path / "churnflow.toml"
    config.write_text(
        '[data]\ncustomers = "customers.csv"\nevents = ""\n[data.columns]\nlabel = "churned"\nsignup_time = ""\n'
        'pii = []\n[churn]\ndefinition = "label"\n[features]\nvalue_column = ""\n[training]\nn_trials = 1\n'
    )
    settings = load_settings(config)
    with pytest.raises(TrainingDataError, match=r"0 churner\(s\) \(label 1\) and 40 non-churner"):
        train_model(load_tables(settings), settings)


def test_the_recipe_imports_neither_prefect_nor_mlflow() -> None:
    code = "import sys, training.recipe; print(sorted({'prefect', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def _evaluation(model_auc: float, baselines: dict[str, float], clearly: bool = True) -> Evaluation:
    metrics = {"roc_auc": model_auc}
    table = {name: {"roc_auc": auc} for name, auc in baselines.items()}
    best = best_baseline("roc_auc", table)
    return Evaluation(objective="roc_auc", metrics=metrics, baselines=table, comparison=pd.DataFrame(),
                      beats_recency=True, gains=pd.DataFrame(), n_test=100, churn_rate=0.2, best_baseline=best,
                      beats_best_baseline=best is None or model_auc >= table[best]["roc_auc"],
                      baseline_clearly_better=clearly and best is not None and model_auc < table[best]["roc_auc"])


def test_a_simple_baseline_that_wins_on_the_test_rows_becomes_the_candidate() -> None:
    """The registered model is never the loser: a registrable baseline that beat it replaces it."""
    from churnflow.features.settings import Settings
    from churnflow.training.recipe import champion_choice

    settings = Settings()
    lost = _evaluation(0.80, {"recency": 0.70, "logistic_all": 0.83, "xgboost_shallow": 0.81})
    choice = champion_choice(lost, settings)
    assert choice is not None and choice.family == "linear"  # logistic regression on all features
    shallow = champion_choice(_evaluation(0.80, {"logistic_all": 0.79, "xgboost_shallow": 0.82}), settings)
    assert shallow is not None and shallow.family == "tree" and shallow.n_rounds == 300
    assert champion_choice(_evaluation(0.85, {"logistic_all": 0.83, "xgboost_shallow": 0.84}), settings) is None
    # Recency cannot be registered as this model (another feature set): the candidate stays.
    assert champion_choice(_evaluation(0.80, {"recency": 0.90, "logistic_all": 0.70}), settings) is None
    # A win within test-row noise is reported but does not overrule the cross-validation.
    assert champion_choice(_evaluation(0.80, {"logistic_all": 0.83}, clearly=False), settings) is None


def test_a_losing_candidate_is_replaced_by_the_baseline_that_beat_it_on_real_data() -> None:
    """Wiring of the rule above on the IBM HR attrition table: a deliberately crippled candidate
    (C = 1e-6) loses, and the evaluated (hence registered) model is the winning baseline."""
    import dataclasses

    from churnflow.features.build import infer_schema
    from churnflow.training.calibration import Calibrator
    from churnflow.training.evaluate import baseline_choice
    from churnflow.training.recipe import _evaluate_candidate
    from churnflow.training.split import plan_for, training_snapshots

    settings = load_settings(REPO / "configs" / "attrition.toml")
    tables = load_tables(settings)
    schema = infer_schema(tables, settings)
    dev, test = training_snapshots(tables, plan_for(tables, settings), settings, schema)
    crippled = dataclasses.replace(baseline_choice("logistic_all", settings), linear_c=1e-6)
    choice, _, evaluation = _evaluate_candidate(dev, test, schema, settings, crippled,
                                                Calibrator(method="identity"), None)
    assert choice.linear_c == 1.0 and evaluation.beats_best_baseline
    objective = evaluation.objective
    assert evaluation.metrics[objective] == evaluation.baselines[evaluation.best_baseline][objective]
    assert evaluation.notes[0].startswith("BASELINE WINS") and "registered model is therefore" in evaluation.notes[0]
