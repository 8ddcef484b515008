"""Honest baselines: logistic regression on every encoded feature and a fixed shallow XGBoost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator
from churnflow.training.churn_model import model_frame
from churnflow.training.evaluate import (
    LOGISTIC_ALL_C,
    SHALLOW_XGBOOST_ROUNDS,
    best_baseline,
    evaluate,
    fit_simple_baseline,
    logistic_rfm_baseline,
)
from churnflow.training.tune import make_dmatrix

SCHEMA = FeatureSchema(
    features=["tenure_days", "income", "support_contacts_90d", "plan", "region"],
    categorical_levels={"plan": ["basic", "enterprise", "pro"], "region": ["north", "south"]},
)


def snapshot_table(n: int, seed: int) -> pd.DataFrame:
    """A snapshot table whose churn is linear in the plan, log-income and support contacts."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "enterprise"], n, p=[0.5, 0.35, 0.15])
    income = rng.lognormal(8, 1.2, n)  # heavily skewed: log1p makes it linear in the logit
    contacts = rng.poisson(1.0, n).astype(float)
    logit = -1.0 + 1.5 * (plan == "basic") - 1.5 * (plan == "enterprise") - 0.8 * (np.log(income) - 8) + 0.5 * contacts
    contacts[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8"),
            "tenure_days": rng.uniform(30, 1500, n),
            "income": income,
            "support_contacts_90d": contacts,
            "plan": pd.Series(plan, dtype="str"),
            "region": pd.Series(rng.choice(["north", "south"], n), dtype="str"),
        }
    )


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    return snapshot_table(3000, 0), snapshot_table(2000, 1)


def settings_for(root, **training: object) -> Settings:
    return Settings(root=root, training={"n_threads": 1} | training)


def test_logistic_on_all_features_encodes_categories_logs_and_missing_values(split, tmp_path) -> None:
    train, test = split
    bundle = fit_simple_baseline("logistic_all", train, SCHEMA, settings_for(tmp_path))
    linear = bundle.linear
    assert bundle.booster is None and bundle.tree_weight == 0.0 and linear is not None
    assert linear.log1p == ["income"], "only the skewed non-negative column is log-transformed"
    assert linear.indicators == ["support_contacts_90d"], "missing contacts get an indicator column"
    assert {"plan=basic", "plan=pro", "region=north"} <= set(linear.columns)

    # The RFM-only logistic regression cannot see the plan; the all-feature one can.
    y = test["label"].to_numpy()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    auc_all = roc_auc_score(y, bundle.predict_proba(test))
    auc_rfm = logistic_rfm_baseline(train, test, ["tenure_days"])["roc_auc"]
    assert auc_all > 0.8 > auc_rfm + 0.2

    # It is the fixed-C logistic regression on that encoding (what scikit-learn fits on it).
    frame = model_frame(train, SCHEMA.features, SCHEMA.categorical_levels)
    reference = LogisticRegression(C=LOGISTIC_ALL_C, max_iter=2000).fit(linear.encode(frame), train["label"])
    np.testing.assert_allclose(linear.coef, reference.coef_[0], rtol=1e-4, atol=1e-6)

    # Unseen levels, a missing category and odd numbers at scoring: probabilities, not a crash.
    odd = test.head(3).copy()
    odd["plan"] = ["platinum", None, "basic"]
    odd["income"] = [np.nan, -5.0, 1e9]
    proba = bundle.predict_proba(odd)
    assert np.all(np.isfinite(proba)) and np.all((proba > 0) & (proba < 1))
    restored = ModelBundle.load(bundle.save(tmp_path / "linear"))
    np.testing.assert_allclose(restored.predict_proba(test), bundle.predict_proba(test), rtol=1e-9)


def test_shallow_xgboost_is_fixed_and_registrable(split, tmp_path) -> None:
    train, test = split
    bundle = fit_simple_baseline("xgboost_shallow", train, SCHEMA, settings_for(tmp_path))
    assert bundle.booster.num_boosted_rounds() == SHALLOW_XGBOOST_ROUNDS
    config = json.loads(bundle.booster.save_config())
    assert config["learner"]["gradient_booster"]["tree_train_param"]["max_depth"] == "3"
    np.testing.assert_allclose(bundle.contributions(test).sum(axis=1), bundle.margin(test), atol=1e-4)
    again = fit_simple_baseline("xgboost_shallow", train, SCHEMA, settings_for(tmp_path))
    np.testing.assert_array_equal(bundle.predict_proba(test), again.predict_proba(test))
    restored = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    np.testing.assert_allclose(restored.predict_proba(test), bundle.predict_proba(test), rtol=1e-6)


def test_best_baseline_follows_the_objective_direction() -> None:
    baselines = {
        "recency": {"pr_auc": 0.40, "log_loss": 0.50},
        "logistic_all": {"pr_auc": 0.55, "log_loss": 0.45},
        "xgboost_shallow": {"pr_auc": 0.52, "log_loss": 0.41},
        "broken": {"pr_auc": float("nan"), "log_loss": float("nan")},
    }
    assert best_baseline("pr_auc", baselines) == "logistic_all"
    assert best_baseline("log_loss", baselines) == "xgboost_shallow"
    assert best_baseline("pr_auc", {}) is None


def test_a_winning_baseline_is_reported_loudly(split, tmp_path) -> None:
    """A two-stump booster loses to logistic regression on a linear table: the run must say so."""
    train, test = split
    settings = settings_for(tmp_path, objective="roc_auc")
    params = {"objective": "binary:logistic", "max_depth": 1, "nthread": 1, "seed": 0}
    weak = xgb.train(params, make_dmatrix(train, SCHEMA), num_boost_round=2)
    bundle = ModelBundle(booster=weak, calibrator=Calibrator(method="identity"), schema=SCHEMA, best_iteration=1)
    ev = evaluate(bundle, train, test, settings)
    assert {"logistic_all", "xgboost_shallow"} <= set(ev.baselines)
    assert ev.best_baseline in {"logistic_all", "xgboost_shallow"}
    assert not ev.beats_best_baseline
    assert ev.notes[0].startswith("BASELINE WINS") and ev.best_baseline in ev.notes[0]
    summary = json.loads(json.dumps(ev.to_dict()))
    assert summary["beats_best_baseline"] is False and summary["verdict"] == ev.notes[0]
    # Every model's test-row scores are kept for paired comparisons on the same rows.
    assert set(ev.scores) == {"model", *ev.baselines}
    from sklearn.metrics import roc_auc_score

    for name, metrics in ev.baselines.items():
        assert roc_auc_score(test["label"], ev.scores[name]) == pytest.approx(metrics["roc_auc"])



def test_a_saved_linear_model_scores_as_fitted_when_its_categories_are_not_in_alphabetical_order(split, tmp_path) -> None:
    """The saved ``levels`` come back with sorted keys (``json_text``); the encoding must follow the
    columns' order, not that dict's (found by the Dask training test: a blend mis-scored after loading)."""
    from churnflow.training.bundle import ModelBundle

    train, test = split
    schema = FeatureSchema(features=["tenure_days", "income", "support_contacts_90d", "region", "plan"],
                           categorical_levels=dict(reversed(SCHEMA.categorical_levels.items())))
    bundle = fit_simple_baseline("logistic_all", train, schema, settings_for(tmp_path))
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    assert list(loaded.linear.levels) != list(bundle.linear.levels)  # the keys did come back reordered
    np.testing.assert_allclose(loaded.predict_proba(test), bundle.predict_proba(test), atol=1e-12)
