"""Training: tuning (resume, determinism), fitting, calibration, evaluation, explanation, registry.

Synthetic snapshot frames with a realistic churn signal stand in for features/ output: recency,
frequency, monetary, tenure, a categorical plan, support contacts and a trend, plus a PII column
that must never matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost as xgb

from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator, expected_calibration_error
from churnflow.training.candidates import choose_model
from churnflow.training.churn_model import load_scorer, model_frame
from churnflow.training.evaluate import evaluate, gains_table, score_metrics, top_k_lift_recall
from churnflow.training.explain import behavioural_checks, explain, shap_values
from churnflow.training.fit import fit_bundle, fit_tuned, oof_calibrator
from churnflow.training.split import fold_positions, plan_as_of_dates, split_snapshots
from churnflow.training.tune import TuneResult, make_dmatrix, study_name_for, tune

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

FEATURES = [
    "recency_days",
    "frequency_365d",
    "monetary_365d",
    "tenure_days",
    "plan",
    "support_contacts_90d",
    "trend_ratio",
]
SCHEMA = FeatureSchema(
    features=FEATURES, categorical_levels={"plan": ["basic", "enterprise", "pro"]}, windows_days=[30, 90, 365]
)
PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]


def make_snapshot(n: int, as_of: str | pd.Timestamp, seed: int) -> pd.DataFrame:
    """One snapshot: churn rises with recency, support contacts and the basic plan."""
    rng = np.random.default_rng(seed)
    recency = rng.exponential(60, n)
    freq = rng.poisson(np.clip(20 - recency / 10, 1, None)).astype(float)
    monetary = freq * rng.gamma(2, 25, n)
    tenure = rng.uniform(30, 1500, n)
    plan = rng.choice(["basic", "pro", "enterprise"], n, p=[0.5, 0.35, 0.15])
    support = rng.poisson(1.0, n).astype(float)
    trend = rng.normal(1, 0.3, n)
    logit = (
        -2.0
        + 0.02 * recency
        - 0.05 * freq
        + 1.2 * (plan == "basic")
        - 1.0 * (plan == "enterprise")
        + 0.6 * support
        - 1.5 * (trend - 1)
        - 0.0005 * tenure
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    recency[rng.random(n) < 0.02] = np.nan  # customers without events
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + 1000,
            "as_of": pd.Timestamp(as_of),
            "label": label,
            "recency_days": recency,
            "frequency_365d": freq,
            "monetary_365d": monetary,
            "tenure_days": tenure,
            "plan": pd.Series(plan, dtype="str"),
            "support_contacts_90d": support,
            "trend_ratio": trend,
            "email": [f"user{i}@example.com" for i in range(n)],
        }
    )


def make_split(n: int = 1200, n_train: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    plan = plan_as_of_dates(pd.Timestamp("2024-12-31"), 90, 30, n_train)
    snaps = pd.concat([make_snapshot(n, d, i) for i, d in enumerate(plan.all_dates)], ignore_index=True)
    return split_snapshots(snaps, plan)


def one_fold(train: pd.DataFrame, valid: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Development rows and the single fold (train, valid) of a train/valid pair."""
    dev = pd.concat([train, valid], ignore_index=True)
    return dev, [(np.arange(len(train)), np.arange(len(train), len(dev)))]


def make_cv(n: int = 800, n_train: int = 2) -> tuple[pd.DataFrame, list, pd.DataFrame]:
    """Development rows with three rolling-origin folds, and the test rows."""
    plan = plan_as_of_dates(pd.Timestamp("2024-12-31"), 90, 30, n_train, n_valid=3)
    snaps = pd.concat([make_snapshot(n, d, i) for i, d in enumerate(plan.all_dates)], ignore_index=True)
    dev = snaps[snaps["as_of"] < plan.test].reset_index(drop=True)
    return dev, fold_positions(dev, plan, seed=0), snaps[snaps["as_of"] == plan.test].reset_index(drop=True)


def settings_for(root: Path, **training: object) -> Settings:
    base = {"n_trials": 3, "max_boost_rounds": 80, "early_stopping_rounds": 10, "n_threads": 1}
    return Settings(root=root, training=base | training, tracking={"model_name": "churn-test"})


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return make_split()


@pytest.fixture(scope="module")
def cv() -> tuple[pd.DataFrame, list, pd.DataFrame]:
    return make_cv()


@pytest.fixture(scope="module")
def trained(cv, tmp_path_factory):
    """The recipe's selection on rolling-origin folds: chosen bundle, untuned baseline, evaluation."""
    dev, folds, test = cv
    root = tmp_path_factory.mktemp("trained")
    settings = settings_for(root)
    result = tune(dev, folds, SCHEMA, settings, test_as_of=test["as_of"].iloc[0])
    choice = choose_model(dev, folds, SCHEMA, settings, result)
    bundle = fit_bundle(dev, SCHEMA, choice, oof_calibrator(choice, settings))
    baseline = fit_tuned(dev.iloc[folds[-1][0]], dev.iloc[folds[-1][1]], SCHEMA, settings, {}, 30)
    ev = evaluate(bundle, dev, test, settings, baseline=baseline, plot_dir=root / "plots")
    return {"settings": settings, "tune": result, "bundle": bundle, "baseline": baseline, "eval": ev,
            "choice": choice}


# ---- metrics ------------------------------------------------------------------------------
def test_lift_and_recall_on_hand_cases() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])  # 3 churners of 10, base rate 0.3
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    lift, recall = top_k_lift_recall(y, score, 0.10)  # 1 row: a churner
    assert lift == pytest.approx(1 / 0.3) and recall == pytest.approx(1 / 3)
    lift, recall = top_k_lift_recall(y, score, 0.20)  # 2 rows: 1 churner
    assert lift == pytest.approx(0.5 / 0.3) and recall == pytest.approx(1 / 3)
    lift, recall = top_k_lift_recall(y, score, 0.30)  # 3 rows: 2 churners
    assert lift == pytest.approx((2 / 3) / 0.3) and recall == pytest.approx(2 / 3)
    lift, recall = top_k_lift_recall(y, score, 0.05)  # ceil(0.5) = 1 row
    assert recall == pytest.approx(1 / 3)
    # ordering is by score, not by row position
    lift, recall = top_k_lift_recall(y[::-1], score, 0.10)
    assert recall == pytest.approx(1 / 3)
    lift, recall = top_k_lift_recall(y, -score, 0.10)  # reversed ranking: top row is y[-1] = 1
    assert recall == pytest.approx(1 / 3)
    lift, recall = top_k_lift_recall(y, -score, 0.20)  # rows 9, 8: one churner
    assert lift == pytest.approx(0.5 / 0.3)

    m = score_metrics(y, score)
    assert m["recall_top10"] == pytest.approx(1 / 3) and m["lift_top20"] == pytest.approx(0.5 / 0.3)
    gains = gains_table(y, score, n_bins=5)
    assert gains["churners"].tolist() == [1, 1, 0, 0, 1]
    assert gains["cum_recall"].iloc[-1] == pytest.approx(1.0)
    assert gains["cum_lift"].iloc[0] == pytest.approx(0.5 / 0.3)


def test_calibration_improves_ece_of_a_miscalibrated_booster(data, tmp_path) -> None:
    """A heavily class-weighted booster overstates risk; the validation calibrator fixes it."""
    train, valid, test = data
    settings = settings_for(tmp_path)
    bundle = fit_tuned(
        train, valid, SCHEMA, settings, {"max_depth": 3, "scale_pos_weight": 6.0, "learning_rate": 0.1}, 60
    )
    raw = bundle.raw_probability(test)
    cal = bundle.predict_proba(test)
    y = test["label"].to_numpy()
    assert raw.mean() > y.mean() + 0.15, "the input must be miscalibrated for this test to mean anything"
    assert expected_calibration_error(cal, y) < 0.5 * expected_calibration_error(raw, y)
    assert bundle.calibrator.method != "identity", "auto must choose a map for a miscalibrated booster"
    assert cal.min() > 0 and cal.max() < 1, "calibrated probabilities are bounded away from 0 and 1"


def test_contributions_sum_to_margin_after_early_stopping(data) -> None:
    train, valid, test = data
    booster = xgb.train({"max_depth": 4, "learning_rate": 0.3, "seed": 0}, make_dmatrix(train, SCHEMA), 200,
                        evals=[(make_dmatrix(valid, SCHEMA), "valid")], early_stopping_rounds=5, verbose_eval=False)
    bundle = ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=SCHEMA,
                         best_iteration=booster.best_iteration)
    # early stopping leaves trees after the best iteration in the booster
    assert booster.num_boosted_rounds() > bundle.best_iteration + 1
    contrib = bundle.contributions(test)
    np.testing.assert_allclose(contrib.sum(axis=1), bundle.margin(test), atol=1e-4)
    values, bias = shap_values(bundle, test)
    np.testing.assert_allclose(values.sum(axis=1).to_numpy() + bias, bundle.margin(test), atol=1e-4)
    assert list(values.columns) == FEATURES


@pytest.mark.parametrize("tree_weight", [1.0, 0.0, 0.5])
def test_every_family_adds_up_and_round_trips_through_json(cv, tmp_path, tree_weight) -> None:
    """Tree, linear and blend: contributions sum to the margin; the saved kernel scores identically."""
    dev, folds, test = cv
    settings = settings_for(tmp_path, n_trials=1)
    tuned = tune(dev, folds, SCHEMA, settings)
    choice = choose_model(dev, folds, SCHEMA, settings, tuned)
    forced = replace(choice, tree_weight=tree_weight, family={1.0: "tree", 0.0: "linear"}.get(tree_weight, "blend"))
    bundle = fit_bundle(dev, SCHEMA, forced, oof_calibrator(choice, settings))
    assert bundle.family == forced.family
    assert (bundle.booster is None) == (tree_weight == 0.0) and (bundle.linear is None) == (tree_weight == 1.0)
    with_gaps = test.assign(recency_days=test["recency_days"].where(test.index % 7 != 0),
                            plan=test["plan"].where(test.index % 5 != 0, "platinum"))
    contrib = bundle.contributions(with_gaps)
    assert contrib.shape == (len(test), len(FEATURES) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), bundle.margin(with_gaps), atol=1e-4)
    if tree_weight < 1:  # the linear part explains through its source features (one-hot summed back)
        linear = bundle.linear.contributions(model_frame(with_gaps, SCHEMA.features, SCHEMA.categorical_levels), FEATURES)
        assert np.abs(linear[:, FEATURES.index("plan")]).max() > 0.1
        assert "recency_days" in bundle.linear.log1p or "frequency_365d" in bundle.linear.log1p
        assert "recency_days" in bundle.linear.indicators
    folder = bundle.save(tmp_path / "bundle")
    assert not list(folder.glob("*.pkl")) and (folder / "model.json").exists()
    loaded = ModelBundle.load(folder)
    np.testing.assert_allclose(loaded.predict_proba(with_gaps), bundle.predict_proba(with_gaps), atol=1e-12)
    np.testing.assert_allclose(load_scorer(folder).probability(with_gaps), bundle.predict_proba(with_gaps),
                               atol=1e-12)
    np.testing.assert_allclose(loaded.contributions(with_gaps), contrib, atol=1e-9)


def test_the_kernel_imports_nothing_of_churnflow() -> None:
    source = (REPO / "training" / "churn_model.py").read_text()
    imports = [line for line in source.splitlines() if line.lstrip().startswith(("import ", "from "))]
    assert not [line for line in imports if "features" in line or "training" in line], imports


def test_unseen_and_missing_category_levels_do_not_crash(trained, data) -> None:
    bundle = trained["bundle"]
    test = data[2].head(6).copy()
    as_str = test.assign(plan=["basic", "platinum", None, np.nan, "", "pro"])
    p = bundle.predict_proba(as_str)
    assert np.isfinite(p).all()
    as_missing = test.assign(plan=pd.Series([np.nan] * 6, dtype="float64"))
    p_missing = bundle.predict_proba(as_missing)
    # unseen levels are treated exactly like missing ones
    np.testing.assert_allclose(p[[1, 2, 3, 4]], p_missing[[1, 2, 3, 4]])
    as_cat = test.assign(plan=pd.Categorical(["gold", "pro", "basic", "pro", "gold", "basic"]))
    p_cat = bundle.predict_proba(as_cat)
    np.testing.assert_allclose(p_cat[[0, 4]], p_missing[[0, 4]])
    np.testing.assert_allclose(p_cat[[2, 5]], bundle.predict_proba(test.assign(plan="basic"))[[2, 5]])


# ---- tuning ----------------------------------------------------------------------------------
RESUME_SCRIPT = """
import sys, time
import numpy as np
import pandas as pd
import xgboost as xgb
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.tune import tune

root = sys.argv[1]
_train = xgb.train
def slow_train(*args, **kwargs):  # slow trials down so the test can kill one mid-way
    time.sleep(1.0)
    return _train(*args, **kwargs)
xgb.train = slow_train
settings = Settings.model_validate_json(open(root + "/settings.json").read()).model_copy(update={"root": __import__("pathlib").Path(root)})
schema = FeatureSchema.load(root + "/schema.json")
train, valid = pd.read_parquet(root + "/train.parquet"), pd.read_parquet(root + "/valid.parquet")
dev = pd.concat([train, valid], ignore_index=True)
folds = [(np.arange(len(train)), np.arange(len(train), len(dev)))]
tune(dev, folds, schema, settings, study_name="resume")
"""


def _trial_states(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """Trials in the storage; empty while the tuning process has not created the study yet.

    Optuna creates its tables when it opens a storage: the poller must not open it before the
    tuning process has (both would create the tables at once), so it first looks with sqlite3.
    """
    import sqlite3

    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path) as db:
            if not db.execute("SELECT count(*) FROM studies WHERE study_name = ?", (name,)).fetchone()[0]:
                return []
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except Exception:  # tables not created yet, or being written right now
        return []


def test_resume_after_kill_runs_only_the_remaining_trials(data, tmp_path) -> None:
    train, valid, _ = data
    n_trials = 5
    settings = settings_for(tmp_path, n_trials=n_trials, pruning=False)
    (tmp_path / "settings.json").write_text(settings.model_dump_json())
    SCHEMA.save(tmp_path / "schema.json")
    train.to_parquet(tmp_path / "train.parquet")
    valid.to_parquet(tmp_path / "valid.parquet")
    (tmp_path / "run.py").write_text(RESUME_SCRIPT)
    url = settings.optuna_storage
    proc = subprocess.Popen(
        [PYTHON, str(tmp_path / "run.py"), str(tmp_path)],
        env=os.environ | {"PYTHONPATH": str(REPO)},  # this checkout, not an installed churnflow
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            trials = _trial_states(url, "resume")
            finished = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
            running = [t for t in trials if t.state.name == "RUNNING"]
            if len(finished) >= 2 and running:
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, f"tuning subprocess ended early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "tuning subprocess too slow"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    before = {t.number: (t.params, t.value) for t in _trial_states(url, "resume") if t.state.name == "COMPLETE"}
    assert 2 <= len(before) < n_trials
    assert any(t.state.name == "RUNNING" for t in _trial_states(url, "resume"))

    dev, folds = one_fold(train, valid)
    result = tune(dev, folds, SCHEMA, settings, study_name="resume")
    trials = result.study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == n_trials
    assert "RUNNING" not in states and states.count("FAIL") >= 1  # the killed trial
    assert result.n_run_now == n_trials - len(before)
    assert all(list(t.intermediate_values) == [0] for t in trials if t.state.name == "COMPLETE"), "one fold"
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    for t in trials:  # earlier trials kept unchanged
        if t.number in before:
            assert (t.params, t.value) == before[t.number]
    done = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done)), "a resumed study must not replay earlier suggestions"
    # a further rerun spends nothing
    again = tune(dev, folds, SCHEMA, settings, study_name="resume")
    assert again.n_run_now == 0 and len(again.trials) == len(trials)


def test_tuning_and_fit_are_deterministic_with_fixed_seeds(cv, tmp_path) -> None:
    dev, folds, test = cv
    outs = []
    for run in ("a", "b"):
        settings = settings_for(tmp_path / run, n_trials=3)
        res = tune(dev, folds, SCHEMA, settings, test_as_of=test["as_of"].iloc[0])
        choice = choose_model(dev, folds, SCHEMA, settings, res)
        bundle = fit_bundle(dev, SCHEMA, choice, oof_calibrator(choice, settings))
        outs.append((res, choice, bundle.predict_proba(test)))
    (r1, c1, p1), (r2, c2, p2) = outs
    assert r1.study.study_name == r2.study.study_name == "churn-test-2024-10-03-pr_auc"
    assert r1.best_params == r2.best_params and r1.best_iteration == r2.best_iteration
    assert r1.best_value == r2.best_value and c1.cv_scores == c2.cv_scores
    np.testing.assert_array_equal(p1, p2)
    assert r1.trials["value"].tolist() == r2.trials["value"].tolist()
    assert (tmp_path / "a" / "mlruns" / "optuna.db").exists()
    for key in ("max_depth", "learning_rate", "min_child_weight", "subsample", "reg_lambda"):
        assert key in r1.best_params
    assert r1.best_params["tree_method"] == "hist" and r1.best_params["eval_metric"] == "aucpr"
    assert r1.trials["best_iteration"].notna().all()
    # the value is the mean over the three rolling origins, reported after each fold for pruning
    assert len(folds) == 3
    for t in r1.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert sorted(t.intermediate_values) == [0, 1, 2]
        assert t.value == pytest.approx(np.mean(t.user_attrs["fold_values"]), abs=1e-5)


def test_a_study_belongs_to_its_data(cv, tmp_path) -> None:
    """Same data: the rerun resumes and runs nothing; fixed data: a new study with new trials."""
    dev, folds, _ = cv
    settings = settings_for(tmp_path, n_trials=2)
    first = tune(dev, folds, SCHEMA, settings, data_key="aaaa1111")
    again = tune(dev, folds, SCHEMA, settings, data_key="aaaa1111")
    fixed = tune(dev, folds, SCHEMA, settings, data_key="bbbb2222")
    assert first.n_run_now == 2 and again.n_run_now == 0 and fixed.n_run_now == 2
    assert first.study.study_name.endswith("-pr_auc-aaaa1111") and fixed.study.study_name.endswith("-bbbb2222")
    assert study_name_for(settings, None) == "churn-test-snapshot-pr_auc"


def test_cross_validated_selection_picks_the_linear_model_on_linear_data(tmp_path) -> None:
    """Few rows, an additive signal: the linear model (or a blend) must win the comparison."""
    rng = np.random.default_rng(3)
    n = 600
    x = rng.normal(size=(n, 4))
    label = (rng.random(n) < 1 / (1 + np.exp(-(x @ [1.5, -1.0, 0.8, 0.0])))).astype("int8")
    dev = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(label=label, as_of=pd.Timestamp("2024-01-01"))
    schema = FeatureSchema(features=["a", "b", "c", "d"], categorical_levels={})
    from churnflow.training.split import snapshot_plan

    folds = fold_positions(dev, snapshot_plan(pd.Timestamp("2024-01-01")), seed=0)
    assert len(folds) == 10  # 5-fold, repeated twice
    settings = settings_for(tmp_path, n_trials=3, objective="roc_auc")
    choice = choose_model(dev, folds, schema, settings, tune(dev, folds, schema, settings))
    assert choice.family in {"linear", "blend"} and choice.tree_weight <= 0.5
    assert choice.cv_scores["linear"] > choice.cv_scores["tree"]
    assert set(choice.cv_scores) == {"tree", "linear", "blend_0.75", "blend_0.50", "blend_0.25"}
    assert len(choice.oof_margin) == len(choice.oof_label) == n  # one per row, averaged over repeats
    np.testing.assert_array_equal(choice.oof_label, label)


def test_log_loss_objective_minimises(data, tmp_path) -> None:
    dev, folds = one_fold(*data[:2])
    res = tune(dev, folds, SCHEMA, settings_for(tmp_path, n_trials=2, objective="log_loss"))
    assert res.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert res.best_params["eval_metric"] == "logloss"
    assert res.best_value == pytest.approx(res.trials["value"].min())


# ---- evaluation and explanation ----------------------------------------------------------------
def test_evaluation_compares_with_baselines(trained, cv) -> None:
    ev = trained["eval"]
    assert set(ev.baselines) == {"recency", "logistic_rfm", "logistic_all", "xgboost_shallow", "xgboost_untuned"}
    assert ev.beats_recency
    assert ev.metrics["pr_auc"] > ev.baselines["recency"]["pr_auc"]
    for name in ev.baselines:
        col = f"tuned_minus_{name}"
        assert ev.comparison.loc["pr_auc", col] == pytest.approx(
            ev.metrics["pr_auc"] - ev.baselines[name]["pr_auc"]
        )
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "ece_raw", "lift_top5", "recall_top20"):
        assert np.isfinite(ev.metrics[key])
    assert len(ev.gains) == 10 and ev.gains["cum_recall"].iloc[-1] == pytest.approx(1.0)
    for path in ev.plots.values():
        assert path.exists() and path.stat().st_size > 1000
    assert set(ev.plots) == {"calibration", "gains"}
    json.dumps(ev.to_dict())  # metrics.json must be plain JSON

    # snapshot tables have no recency: skipped with a note, not an error
    train, _, test = cv
    settings = trained["settings"]
    no_rec = evaluate(trained["bundle"], train.drop(columns="recency_days"), test, settings)
    assert "recency" not in no_rec.baselines and any("recency baseline skipped" in n for n in no_rec.notes)


def test_explanation_and_behavioural_checks(trained, data, tmp_path) -> None:
    bundle, settings = trained["bundle"], trained["settings"]
    test = data[2]
    ex = explain(bundle, test, tmp_path / "shap", max_rows=500)
    assert ex.importance["feature"].iloc[0] in {"recency_days", "plan"}
    assert ex.importance["share"].sum() == pytest.approx(1.0)
    assert {"shap_importance", "shap_beeswarm"} <= set(ex.plots)
    assert sum(k.startswith("shap_dependence_") for k in ex.plots) == 3
    assert all(p.exists() for p in ex.plots.values())

    checks = {name: (ok, detail) for name, ok, detail in behavioural_checks(bundle, test, settings)}
    assert checks["recency_plus_60d_does_not_lower_risk"][0]
    assert checks["pii_not_features"][0] and checks["invariant_to_pii"][0]

    # a model that uses a PII column fails the PII checks
    leaky_schema = FeatureSchema(features=[*FEATURES, "email"], categorical_levels=SCHEMA.categorical_levels | {"email": sorted(test["email"].head(50))})
    train, valid, _ = data
    leaky = fit_tuned(train, valid, leaky_schema, settings, {"max_depth": 3}, 20)
    bad = {name: ok for name, ok, _ in behavioural_checks(leaky, test, settings)}
    assert not bad["pii_not_features"]

    # a model that learned "inactive customers stay" fails the recency check
    odd = fit_tuned(
        train.assign(label=1 - train["label"]), valid.assign(label=1 - valid["label"]), SCHEMA, settings, {"max_depth": 3}, 30
    )
    odd_checks = {name: ok for name, ok, _ in behavioural_checks(odd, test, settings)}
    assert not odd_checks["recency_plus_60d_does_not_lower_risk"]


# ---- registry and promotion gate ------------------------------------------------------------
@pytest.fixture(scope="module")
def registry_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def _register(settings: Settings, bundle, train, test, *, tune_result: TuneResult | None = None, baseline=None):
    from churnflow.training.registry import log_and_register

    ev = evaluate(bundle, train, test, settings, baseline=baseline)
    return ev, log_and_register(settings, bundle, ev, test, tune_result=tune_result, fingerprint={"rows": len(train)})


def test_pyfunc_champion_gives_the_bundle_probabilities(trained, data, registry_root, monkeypatch) -> None:
    import mlflow

    from churnflow.training.registry import load_bundle, registry_client

    train, _, test = data
    settings = Settings(root=registry_root, training=trained["settings"].training.model_dump(), tracking={"model_name": "pyfunc-test"})
    bundle = trained["bundle"]
    uri_before = mlflow.get_tracking_uri()
    _, res = _register(settings, bundle, train, test, tune_result=trained["tune"], baseline=trained["baseline"])
    assert res.promoted and res.reason == "no champion yet" and res.version == "1"
    assert mlflow.get_tracking_uri() == uri_before, "library code must not set a process-wide tracking URI"

    expected = bundle.predict_proba(test)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)  # the test is the program's entry point
    model = mlflow.pyfunc.load_model("models:/pyfunc-test@champion")
    out = model.predict(test)
    np.testing.assert_allclose(out["churn_probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    assert out["customer_id"].tolist() == test["customer_id"].tolist()
    as_cat = test.assign(plan=test["plan"].astype("category"))
    np.testing.assert_allclose(model.predict(as_cat)["churn_probability"].to_numpy(), expected, atol=1e-12)
    loaded, version = load_bundle(settings)
    assert version == "1"
    np.testing.assert_allclose(loaded.predict_proba(test), expected, atol=1e-12)

    # the run holds nested trial runs, reports and no PII values
    client = registry_client(settings)
    children = client.search_runs(
        [client.get_experiment_by_name(settings.tracking.experiment).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'",
    )
    assert len(children) == len(trained["tune"].trials)
    assert all(c.data.tags["state"] in {"COMPLETE", "PRUNED", "FAIL"} for c in children)
    for path in (registry_root / "mlruns" / "artifacts").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".csv", ".txt", ".yaml"}:
            assert "@example.com" not in path.read_text(errors="ignore"), path

    # loads in a fresh process too
    test.to_parquet(registry_root / "test.parquet")
    code = textwrap.dedent(
        f"""
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({settings.tracking_uri!r})
        m = mlflow.pyfunc.load_model("models:/pyfunc-test@champion")
        m.predict(pd.read_parquet({str(registry_root / "test.parquet")!r})).to_parquet({str(registry_root / "out.parquet")!r})
        """
    )
    subprocess.run([PYTHON, "-c", code], check=True, cwd=registry_root, capture_output=True, timeout=120)
    fresh = pd.read_parquet(registry_root / "out.parquet")
    np.testing.assert_allclose(fresh["churn_probability"].to_numpy(), expected, atol=1e-12)


def test_gate_refuses_a_worse_model(trained, data, registry_root) -> None:
    from churnflow.training.registry import load_bundle, registry_client

    train, valid, test = data
    settings = Settings(root=registry_root, training=trained["settings"].training.model_dump(), tracking={"model_name": "gate-test"})
    _, first = _register(settings, trained["bundle"], train, test)
    assert first.promoted

    rng = np.random.default_rng(0)
    noisy = train.copy()
    flip = rng.random(len(noisy)) < 0.3
    noisy.loc[flip, "label"] = 1 - noisy.loc[flip, "label"]
    worse = fit_tuned(noisy, valid, SCHEMA, settings, {"max_depth": 2}, 10)
    ev, second = _register(settings, worse, train, test)
    assert ev.beats_recency, "the worse model must still beat recency so that the champion comparison decides"
    assert not second.promoted and second.decision == "rejected"
    assert second.champion_version == first.version
    assert second.champion_metric is not None and second.challenger_metric < second.champion_metric

    client = registry_client(settings)
    assert str(client.get_model_version_by_alias("gate-test", "champion").version) == first.version
    assert str(client.get_model_version_by_alias("gate-test", "challenger").version) == second.version
    tags = client.get_model_version("gate-test", second.version).tags
    assert tags["decision"] == "rejected" and tags["champion_version"] == first.version
    assert float(tags["champion_metric"]) == pytest.approx(second.champion_metric, abs=1e-6)
    assert float(tags["challenger_metric"]) == pytest.approx(second.challenger_metric, abs=1e-6)
    assert "does not beat champion" in tags["reason"]
    assert load_bundle(settings)[1] == first.version
    assert client.get_model_version("gate-test", first.version).tags["decision"] == "promoted"


def test_not_promoted_when_not_beating_recency(data, registry_root) -> None:
    from churnflow.training.registry import NoChampionError, load_bundle

    train, valid, test = data
    settings = Settings(root=registry_root, tracking={"model_name": "recency-test"})
    shuffled = train.assign(label=np.random.default_rng(1).permutation(train["label"].to_numpy()))
    noise = fit_tuned(shuffled, valid, SCHEMA, settings, {"max_depth": 3}, 20)
    ev, res = _register(settings, noise, shuffled, test)
    assert not ev.beats_recency
    assert not res.promoted and "recency" in res.reason and res.champion_version is None
    with pytest.raises(NoChampionError, match="churnflow train"):
        load_bundle(settings)


def test_gate_promotes_when_the_champion_cannot_score_todays_features(data, registry_root) -> None:
    from churnflow.training.registry import registry_client

    train, valid, test = data
    settings = Settings(root=registry_root, tracking={"model_name": "schema-test"})
    old_schema = FeatureSchema(features=[*FEATURES, "old_feature"], categorical_levels=SCHEMA.categorical_levels)
    add = {"old_feature": 1.0}
    old = fit_tuned(train.assign(**add), valid.assign(**add), old_schema, settings, {"max_depth": 3}, 20)
    _, first = _register(settings, old, train.assign(**add), test.assign(**add))
    assert first.promoted
    new = fit_tuned(train, valid, SCHEMA, settings, {"max_depth": 3}, 20)
    _, second = _register(settings, new, train, test)  # today's features lack old_feature
    assert second.promoted and "cannot score today's features" in second.reason
    assert second.champion_metric is None and second.champion_version == first.version
    tags = registry_client(settings).get_model_version("schema-test", second.version).tags
    assert tags["decision"] == "promoted" and "old_feature" in tags["reason"]
