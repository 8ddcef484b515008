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
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from features.schema import FeatureSchema
from features.settings import Settings
from training.calibration import expected_calibration_error
from training.evaluate import evaluate, gains_table, score_metrics, top_k_lift_recall
from training.explain import behavioural_checks, explain, shap_values
from training.fit import fit_baseline, fit_tuned
from training.split import plan_as_of_dates, split_snapshots
from training.tune import TuneResult, tune

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


def settings_for(root: Path, **training: object) -> Settings:
    base = {"n_trials": 3, "max_boost_rounds": 80, "early_stopping_rounds": 10, "n_threads": 1}
    return Settings(root=root, training=base | training, tracking={"model_name": "churn-test"})


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return make_split()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tuned + calibrated bundle, its untuned baseline and evaluation (shared, read-only)."""
    train, valid, test = data
    root = tmp_path_factory.mktemp("trained")
    settings = settings_for(root)
    result = tune(train, valid, SCHEMA, settings, test_as_of=test["as_of"].iloc[0])
    bundle = fit_tuned(train, valid, SCHEMA, settings, result.best_params, result.best_iteration)
    baseline = fit_baseline(train, valid, SCHEMA, settings)
    ev = evaluate(bundle, train, test, settings, baseline=baseline, plot_dir=root / "plots")
    return {"settings": settings, "tune": result, "bundle": bundle, "baseline": baseline, "eval": ev}


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


def test_contributions_sum_to_margin_after_early_stopping(data, tmp_path) -> None:
    train, valid, test = data
    baseline = fit_baseline(train, valid, SCHEMA, settings_for(tmp_path))
    # early stopping leaves trees after the best iteration in the booster
    assert baseline.booster.num_boosted_rounds() > baseline.best_iteration + 1
    contrib = baseline.contributions(test)
    np.testing.assert_allclose(contrib.sum(axis=1), baseline.margin(test), atol=1e-4)
    values, bias = shap_values(baseline, test)
    np.testing.assert_allclose(values.sum(axis=1).to_numpy() + bias, baseline.margin(test), atol=1e-4)
    assert list(values.columns) == FEATURES


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
import pandas as pd
import xgboost as xgb
from features.schema import FeatureSchema
from features.settings import Settings
from training.tune import tune

root = sys.argv[1]
_train = xgb.train
def slow_train(*args, **kwargs):  # slow trials down so the test can kill one mid-way
    time.sleep(1.0)
    return _train(*args, **kwargs)
xgb.train = slow_train
settings = Settings.model_validate_json(open(root + "/settings.json").read()).model_copy(update={"root": __import__("pathlib").Path(root)})
schema = FeatureSchema.load(root + "/schema.json")
tune(pd.read_parquet(root + "/train.parquet"), pd.read_parquet(root + "/valid.parquet"), schema, settings, study_name="resume")
"""


def _trial_states(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """Trials in the storage; empty while the tuning process has not created the study yet."""
    if not Path(url.removeprefix("sqlite:///")).exists():
        return []
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except Exception:  # study not created yet, or the schema is being written right now
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

    result = tune(train, valid, SCHEMA, settings, study_name="resume")
    trials = result.study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == n_trials
    assert "RUNNING" not in states and states.count("FAIL") >= 1  # the killed trial
    assert result.n_run_now == n_trials - len(before)
    assert all(not t.intermediate_values for t in trials), "pruning off: no pruning callback"
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    for t in trials:  # earlier trials kept unchanged
        if t.number in before:
            assert (t.params, t.value) == before[t.number]
    done = [tuple(sorted(t.params.items())) for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == len(set(done)), "a resumed study must not replay earlier suggestions"
    # a further rerun spends nothing
    again = tune(train, valid, SCHEMA, settings, study_name="resume")
    assert again.n_run_now == 0 and len(again.trials) == len(trials)


def test_tuning_and_fit_are_deterministic_with_fixed_seeds(data, tmp_path) -> None:
    train, valid, test = data
    outs = []
    for run in ("a", "b"):
        settings = settings_for(tmp_path / run, n_trials=3)
        res = tune(train, valid, SCHEMA, settings, test_as_of=test["as_of"].iloc[0])
        bundle = fit_tuned(train, valid, SCHEMA, settings, res.best_params, res.best_iteration)
        outs.append((res, bundle.predict_proba(test)))
    (r1, p1), (r2, p2) = outs
    assert r1.study.study_name == r2.study.study_name == "churn-test-2024-10-03-pr_auc"
    assert r1.best_params == r2.best_params and r1.best_iteration == r2.best_iteration
    assert r1.best_value == r2.best_value
    np.testing.assert_array_equal(p1, p2)
    assert r1.trials["value"].tolist() == r2.trials["value"].tolist()
    assert (tmp_path / "a" / "mlruns" / "optuna.db").exists()
    for key in ("max_depth", "learning_rate", "min_child_weight", "subsample", "reg_lambda"):
        assert key in r1.best_params
    assert r1.best_params["tree_method"] == "hist" and r1.best_params["eval_metric"] == "aucpr"
    assert r1.trials["best_iteration"].notna().all()
    # pruning on: the pruning callback reports the validation metric every PRUNE_EVERY rounds
    from training.tune import PRUNE_EVERY

    assert all(t.intermediate_values for t in r1.study.trials)
    assert all(step % PRUNE_EVERY == 0 for t in r1.study.trials for step in t.intermediate_values)


def test_log_loss_objective_minimises(data, tmp_path) -> None:
    train, valid, _ = data
    res = tune(train, valid, SCHEMA, settings_for(tmp_path, n_trials=2, objective="log_loss"))
    assert res.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert res.best_params["eval_metric"] == "logloss"
    assert res.best_value == pytest.approx(res.trials["value"].min())


# ---- evaluation and explanation ----------------------------------------------------------------
def test_evaluation_compares_with_baselines(trained, data) -> None:
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
    train, _, test = data
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
    from training.registry import log_and_register

    ev = evaluate(bundle, train, test, settings, baseline=baseline)
    return ev, log_and_register(settings, bundle, ev, test, tune_result=tune_result, fingerprint={"rows": len(train)})


def test_pyfunc_champion_gives_the_bundle_probabilities(trained, data, registry_root, monkeypatch) -> None:
    import mlflow

    from training.registry import load_bundle, registry_client

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
    from training.registry import load_bundle, registry_client

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
    from training.registry import NoChampionError, load_bundle

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
    from training.registry import registry_client

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
