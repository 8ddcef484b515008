"""Model selection that is never structurally worse than the simple baselines (issue 9).

Each test pins one rule of the selection and fails without it: the blend weight is chosen on the
folds and can be exactly 0 or 1, a simpler candidate wins ties within noise, the candidates hold
the baselines' own specifications, folds stop together on the mean curve, out-of-time
calibration is judged on the latest date, and only a clear win on the test rows swaps in a
baseline.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pandas as pd
import pytest
import xgboost as xgb

from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.calibration import fit_calibrator, fit_calibrator_out_of_time
from churnflow.training.candidates import TREE_WEIGHTS, out_of_fold, simplest_within_noise
from churnflow.training.evaluate import LOGISTIC_ALL_C, SHALLOW_XGBOOST, clearly_better
from churnflow.training.linear import C_GRID
from churnflow.training.tune import SHALLOW_START, base_params, cv_trees, fold_matrices, tune


def settings_for(root, **training: object) -> Settings:
    base = {"n_trials": 2, "max_boost_rounds": 120, "early_stopping_rounds": 15, "n_threads": 1}
    return Settings(root=root, training=base | training, tracking={"model_name": "selection-test"})


def tabular(n: int = 500, seed: int = 0) -> tuple[pd.DataFrame, FeatureSchema]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + 1.0 * (x[:, 2] > 0.5)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(label=label, as_of=pd.Timestamp("2024-01-01"))
    return frame, FeatureSchema(features=["a", "b", "c"], categorical_levels={})


def stratified_folds(frame: pd.DataFrame, k: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=0).split(frame, frame["label"]))


# ---- the blend weight and ties -------------------------------------------------------------------
def test_every_weight_from_linear_to_tree_is_a_candidate() -> None:
    assert TREE_WEIGHTS[:2] == (1.0, 0.0) and len(set(TREE_WEIGHTS)) == len(TREE_WEIGHTS) == 11


def test_the_blend_weight_is_chosen_on_the_folds_and_can_be_0_or_1() -> None:
    folds = 6
    flat = {w: np.full(folds, 0.80) for w in TREE_WEIGHTS}
    clear_blend = flat | {0.4: np.full(folds, 0.82) + np.linspace(0, 0.002, folds)}
    assert simplest_within_noise(clear_blend, 1.0) == 0.4
    clear_tree = flat | {1.0: np.full(folds, 0.85) + np.linspace(0, 0.002, folds)}
    assert simplest_within_noise(clear_tree, 1.0) == 1.0
    clear_linear = flat | {0.0: np.full(folds, 0.85) + np.linspace(0, 0.002, folds)}
    assert simplest_within_noise(clear_linear, 1.0) == 0.0
    # log loss: lower is better
    assert simplest_within_noise(flat | {0.7: np.full(folds, 0.30) + np.linspace(0, 0.001, folds)}, -1.0) == 0.7


def test_a_blend_ahead_within_noise_yields_to_the_simpler_linear_model() -> None:
    linear = 0.80 + np.linspace(-0.02, 0.02, 10)
    noisy_blend = linear + np.tile([0.010, -0.008], 5)  # ahead by 0.001 on the mean, error ~0.003
    per_fold = {w: linear - 0.05 for w in TREE_WEIGHTS} | {0.0: linear, 0.5: noisy_blend}
    assert noisy_blend.mean() > linear.mean()
    assert simplest_within_noise(per_fold, 1.0) == 0.0


def test_out_of_fold_rows_remember_their_latest_fold() -> None:
    folds = [(np.array([0, 1]), np.array([2, 3])), (np.array([0, 1, 2, 3]), np.array([4, 5]))]
    margins = [np.array([0.1, 0.2]), np.array([0.3, 0.4])]
    margin, label, fold = out_of_fold(folds, margins, np.arange(6.0))
    np.testing.assert_array_equal(fold, [0, 0, 1, 1])
    np.testing.assert_array_equal(label, [2, 3, 4, 5])
    np.testing.assert_allclose(margin, [0.1, 0.2, 0.3, 0.4])


# ---- the candidates hold the baselines ------------------------------------------------------------
def test_the_linear_grid_holds_the_logistic_baseline_and_strong_regularisation() -> None:
    assert LOGISTIC_ALL_C in C_GRID and min(C_GRID) <= 0.003
    assert list(C_GRID) == sorted(C_GRID)


def test_every_new_study_starts_with_the_shallow_xgboost(tmp_path) -> None:
    frame, schema = tabular()
    settings = settings_for(tmp_path, objective="roc_auc")
    result = tune(frame, stratified_folds(frame), schema, settings, data_key="shallow1")
    first = result.study.get_trials(deepcopy=False)[0]
    assert first.params == SHALLOW_START
    assert SHALLOW_START.items() >= SHALLOW_XGBOOST.items()
    defaults = {"min_child_weight": 1.0, "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0,
                "gamma": 0.0, "scale_pos_weight": 1.0, "max_delta_step": 0}
    assert SHALLOW_START.items() >= defaults.items()  # XGBoost's own defaults, as the baseline runs
    # a resumed study is not given the start trial twice
    more = tune(frame, stratified_folds(frame), schema, settings_for(tmp_path, objective="roc_auc", n_trials=3),
                data_key="shallow1")
    assert [t.params for t in more.study.get_trials(deepcopy=False)].count(SHALLOW_START) == 1


# ---- folds stop together on the mean curve -------------------------------------------------------
def test_folds_stop_together_at_the_best_round_of_the_mean_curve(tmp_path) -> None:
    frame, schema = tabular(600, 1)
    folds = stratified_folds(frame, 3)
    settings = settings_for(tmp_path, objective="roc_auc", max_boost_rounds=60, early_stopping_rounds=60)
    params = base_params(settings) | SHALLOW_START | {"learning_rate": 0.3}
    scores, iterations, boosters = cv_trees(params, fold_matrices(frame, folds, schema), settings)
    curves = []
    for dtrain, dvalid in fold_matrices(frame, folds, schema):
        history: dict = {}
        xgb.train(params, dtrain, num_boost_round=60, evals=[(dvalid, "v")], evals_result=history, verbose_eval=False)
        curves.append(history["v"]["auc"])
    mean = np.mean(curves, axis=0)
    best = int(np.argmax(mean))
    assert iterations == [best] * 3 and all(b.best_iteration == best for b in boosters)
    np.testing.assert_allclose(scores, [c[best] for c in curves], atol=1e-6)
    assert np.mean(scores) == pytest.approx(mean.max(), abs=1e-6)


def test_a_pruned_trial_is_stopped_on_the_running_mean(tmp_path) -> None:
    frame, schema = tabular()
    settings = settings_for(tmp_path, objective="roc_auc", max_boost_rounds=60, early_stopping_rounds=60)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=0.99, n_warmup_steps=0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned):
        cv_trees(base_params(settings) | SHALLOW_START, fold_matrices(frame, stratified_folds(frame), schema),
                 settings, trial)
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [9]


# ---- calibration out of time ---------------------------------------------------------------------
def _scores(n: int, rate_shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw probabilities, and labels whose churn odds are shifted by ``rate_shift`` (log odds)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n) * 1.2 + 1.0
    p = 1 / (1 + np.exp(-z))
    return p, (rng.random(n) < 1 / (1 + np.exp(-(z + rate_shift)))).astype(float)


def test_out_of_time_calibration_keeps_identity_when_only_the_past_was_off() -> None:
    """Older dates had fewer churners than the model says; the latest date agrees with it. A map
    fitted on all dates pooled would carry the old world forward; out of time, it is refused."""
    old_p, old_y = _scores(4000, -1.0, 0)
    new_p, new_y = _scores(2000, 0.0, 1)
    p, y = np.r_[old_p, new_p], np.r_[old_y, new_y]
    fold = np.r_[np.zeros(len(old_p)), np.ones(len(new_p))]
    assert fit_calibrator(p, y).method != "identity"  # pooled: a map learned from the old dates
    chosen = fit_calibrator_out_of_time(p, y, fold)
    assert chosen.method == "identity"
    assert chosen.log_loss_by_method["identity"] < min(chosen.log_loss_by_method[m] for m in ("sigmoid", "beta"))


def test_out_of_time_calibration_fits_the_proven_map_on_the_latest_date() -> None:
    old_p, old_y = _scores(4000, -1.0, 0)
    new_p, new_y = _scores(3000, -1.0, 1)
    fold = np.r_[np.zeros(len(old_p)), np.ones(len(new_p))]
    chosen = fit_calibrator_out_of_time(np.r_[old_p, new_p], np.r_[old_y, new_y], fold)
    assert chosen.method != "identity"
    refit = fit_calibrator(new_p, new_y, chosen.method)  # the same map, fitted on the latest date only
    np.testing.assert_allclose(chosen.transform(new_p), refit.transform(new_p))
    assert np.all(np.diff(chosen.transform(np.linspace(0.01, 0.99, 99))) > 0)  # order kept


# ---- swapping in a baseline needs a clear win -----------------------------------------------------
def test_only_a_clear_win_on_the_test_rows_counts() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.2).astype(float)
    signal = y + rng.normal(0, 1.0, 600)
    noise = rng.normal(0, 0.2, 600)
    model = signal + noise
    tiny_edge = signal + 0.9 * noise  # better on these rows, by a hair
    assert clearly_better("roc_auc", y, signal + rng.normal(0, 0.05, 600) + y, model)
    assert not clearly_better("roc_auc", y, tiny_edge, model)
    assert not clearly_better("roc_auc", y, model, model)
    p = 1 / (1 + np.exp(-model))
    assert clearly_better("log_loss", y, np.clip(0.5 * p + 0.5 * y, 0.01, 0.99), p)


# ---- the final fit on more rows ------------------------------------------------------------------
def test_the_final_tree_grows_with_the_rows_it_gains_over_a_fold() -> None:
    from churnflow.training.evaluate import baseline_choice
    from churnflow.training.fit import MAX_ROUNDS_FACTOR, final_rounds

    shallow = baseline_choice("xgboost_shallow", Settings())
    assert final_rounds(shallow, 10_000) == 300  # a fixed baseline is fitted as specified
    chosen = dataclasses.replace(shallow, n_rounds=100, fold_rows=800)
    assert final_rounds(chosen, 800) == 100 and final_rounds(chosen, 500) == 100
    assert final_rounds(chosen, 1250) == 125  # sqrt(1250 / 800) = 1.25
    assert final_rounds(chosen, 100_000) == 100 * MAX_ROUNDS_FACTOR


def test_a_bundle_records_the_rounds_it_was_fitted_with(tmp_path) -> None:
    from churnflow.training.calibration import Calibrator
    from churnflow.training.evaluate import baseline_choice
    from churnflow.training.fit import fit_bundle

    frame, schema = tabular(400)
    spec = dataclasses.replace(baseline_choice("xgboost_shallow", settings_for(tmp_path)), n_rounds=20, fold_rows=100)
    bundle = fit_bundle(frame, schema, spec, Calibrator(method="identity"))
    assert bundle.booster.num_boosted_rounds() == 40 == bundle.best_iteration + 1  # sqrt(400 / 100) = 2


def test_the_warm_started_c_path_matches_cold_fits() -> None:
    from churnflow.training.linear import fit_linear, fit_linear_path

    frame, schema = tabular(400, 2)
    label = frame["label"].to_numpy()
    path = fit_linear_path(frame[schema.features], label, schema.features, {}, C_GRID)
    assert len(path) == len(C_GRID)
    for c, warm in zip(C_GRID, path, strict=True):
        cold = fit_linear(frame[schema.features], label, schema.features, {}, c)
        np.testing.assert_allclose(warm.margin(frame), cold.margin(frame), atol=1e-2)  # lbfgs tolerance
    assert abs(path[0].coef[0]) < abs(path[-1].coef[0])  # stronger regularisation, smaller weights
