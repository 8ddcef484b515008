"""Optuna search over XGBoost tree hyperparameters, cross-validated, resumable and reproducible.

A trial's value is the mean of its validation metric over the folds of
``training.split.fold_positions`` (repeated stratified k-fold of the development rows of a
snapshot table; rolling-origin validation dates of event data), never one small split: a single
validation set rewards the trial that fits its noise. Each fold early-stops on its own validation
rows; the trial records the mean best iteration, which the final fit uses. The running mean is
reported after every fold (all trials see the folds in the same order), so a median rule
prunes an unpromising trial as soon as one fold shows it.

The study lives in persistent storage (SQLite under ``mlruns/`` by default) under a name derived
from the model, the test as-of date, the objective and a hash of the data and folds
(:func:`study_name_for`): an interrupted run on the same data resumes (``n_trials`` is the
study's total; trials a killed process left RUNNING are marked FAIL), while retraining after the
data changed starts a new study instead of reusing trials tuned on other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from optuna.trial import TrialState

from churnflow.features.io import ensure_sqlite_folder
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.training.churn_model import model_frame
from churnflow.training.errors import TuningBudgetError

logger = logging.getLogger(__name__)

# objective setting -> (XGBoost eval_metric, Optuna direction)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "pr_auc": ("aucpr", "maximize"),
    "roc_auc": ("auc", "maximize"),
    "log_loss": ("logloss", "minimize"),
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Folds = list[tuple[np.ndarray, np.ndarray]]
"""(training rows, validation rows) of each fold, as positions in the development frame."""


@dataclass(frozen=True)
class TuneResult:
    study: optuna.Study
    best_params: dict[str, Any]
    """Complete XGBoost params (fixed + tuned) of the best trial, ready for ``xgb.train``."""
    best_iteration: int
    """Mean over the folds of the best trial's early-stopping iteration."""
    best_value: float
    """Mean validation metric of the best trial over the folds."""
    trials: pd.DataFrame
    n_run_now: int
    """Trials started by this invocation (0 when the budget was already spent)."""
    best_oof: list[np.ndarray] | None = field(default=None, repr=False)
    """Validation margins of the best trial per fold, when it ran in this invocation."""


def eval_metric(objective: str) -> str:
    return OBJECTIVES[objective][0]


def direction(objective: str) -> str:
    return OBJECTIVES[objective][1]


def base_params(settings: Settings) -> dict[str, Any]:
    """Fixed XGBoost params: CPU ``hist``, thread count and seed pinned for reproducibility."""
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "eval_metric": eval_metric(settings.training.objective),
        "nthread": settings.training.n_threads,
        "seed": settings.training.seed,
        "verbosity": 0,
    }


def short_hash(data: Any) -> str:
    """8 hex digits identifying JSON-able ``data`` (a data fingerprint, the folds, ...)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def study_name_for(settings: Settings, test_as_of: pd.Timestamp | None, data_key: str = "") -> str:
    """Explicit ``training.study_name`` or ``<model>-<test as-of>-<objective>[-<data key>]``.

    Deterministic, so a rerun on the same data resumes the same study; the objective is part of
    the name because a study's direction cannot change, and ``data_key`` (a hash of the data
    fingerprint and folds) because trials tuned on other data must not be reused.
    """
    if settings.training.study_name:
        return settings.training.study_name
    date = pd.Timestamp(test_as_of).date().isoformat() if test_as_of is not None else "snapshot"
    name = f"{settings.tracking.model_name}-{date}-{settings.training.objective}"
    return f"{name}-{data_key}" if data_key else name


def label_array(frame: pd.DataFrame) -> np.ndarray:
    return frame["label"].to_numpy(dtype=np.float64)


def make_dmatrix(frame: pd.DataFrame, schema: FeatureSchema, with_label: bool = True) -> xgb.DMatrix:
    """Model matrix with the schema's feature order and category levels (unseen -> missing)."""
    return xgb.DMatrix(
        model_frame(frame, schema.features, schema.categorical_levels),
        label=label_array(frame) if with_label else None,
        enable_categorical=True,
        nthread=1,
    )


def suggest_params(trial: optuna.Trial, pos_weight_max: float) -> dict[str, Any]:
    """The search space: tree shape, learning rate, sampling, regularisation, class weight."""
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        "gamma": trial.suggest_float("gamma", 0.0, 5.0),
        "scale_pos_weight": trial.suggest_float(
            "scale_pos_weight", 1.0, max(2.0, pos_weight_max), log=True
        ),
        "max_delta_step": trial.suggest_int("max_delta_step", 0, 5),
    }


def fail_stale_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Mark trials left RUNNING (by a killed process) as FAIL so they neither count nor block.

    Assumes one tuning process per study at a time (the flow's contract).
    """
    study_id = storage.get_study_id_from_name(study_name)
    stale = [t for t in storage.get_all_trials(study_id, deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_system_attr(trial_id, "fail_reason", "left RUNNING by an interrupted run")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        logger.warning("trial %d was left RUNNING by an interrupted run; marked FAIL", t.number)
    return len(stale)


def open_study(settings: Settings, name: str, url: str | optuna.storages.BaseStorage
               ) -> tuple[optuna.Study, int, int]:
    """Create or resume the study; return it with its number of trials and of finished ones.

    The sampler's seed is offset by the number of existing trials: a resumed study must not
    replay the random start-up suggestions of the first run (a fresh study is still exactly
    reproducible).
    """
    cfg = settings.training
    if isinstance(url, str):  # else an opened storage (the Dask engine's journal file)
        ensure_sqlite_folder(url)  # Optuna does not create it
    rdb = optuna.storages.get_storage(url)
    optuna.create_study(storage=rdb, study_name=name, direction=direction(cfg.objective), load_if_exists=True)
    fail_stale_trials(rdb, name)
    existing = optuna.load_study(study_name=name, storage=rdb).get_trials(deepcopy=False)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3) if cfg.pruning else optuna.pruners.NopPruner()
    )
    sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(existing))
    study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner)
    return study, len(existing), sum(t.state in FINISHED for t in existing)


def fold_matrices(dev: pd.DataFrame, folds: Folds, schema: FeatureSchema) -> list[tuple[xgb.DMatrix, xgb.DMatrix]]:
    """(training, validation) DMatrix of each fold, built once for all trials."""
    full = make_dmatrix(dev, schema)
    return [(full.slice(train_pos), full.slice(valid_pos)) for train_pos, valid_pos in folds]


def cv_trees(params: dict[str, Any], matrices: list[tuple[xgb.DMatrix, xgb.DMatrix]], settings: Settings,
             trial: optuna.Trial | None = None) -> tuple[list[float], list[int], list[xgb.Booster]]:
    """Early-stopped boosters of every fold, with their best scores and iterations.

    With a ``trial``, the running mean is reported after each fold and the trial pruned when the
    pruner says so.
    """
    cfg = settings.training
    scores: list[float] = []
    iterations: list[int] = []
    boosters: list[xgb.Booster] = []
    for step, (dtrain, dvalid) in enumerate(matrices):
        booster = xgb.train(params, dtrain, num_boost_round=cfg.max_boost_rounds, evals=[(dvalid, "validation")],
                            early_stopping_rounds=cfg.early_stopping_rounds, verbose_eval=False)
        scores.append(float(booster.best_score))
        iterations.append(int(booster.best_iteration))
        boosters.append(booster)
        if trial is not None:
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return scores, iterations, boosters


def validation_margin(booster: xgb.Booster, dvalid: xgb.DMatrix) -> np.ndarray:
    """Margins of an early-stopped booster (trees up to its best iteration) on validation rows."""
    return booster.predict(dvalid, output_margin=True, iteration_range=(0, booster.best_iteration + 1))


def cv_objective(dev: pd.DataFrame, folds: Folds, schema: FeatureSchema, settings: Settings,
                 oof: dict[int, list[np.ndarray]]) -> Callable[[optuna.Trial], float]:
    """The trial function: mean validation metric of the suggested params over the folds.

    Each completed trial's validation margins per fold are kept in ``oof`` (by trial number), so
    the candidate comparison need not refit the best trial's boosters.
    """
    matrices = fold_matrices(dev, folds, schema)
    y = label_array(dev)
    pos = max(float(y.sum()), 1.0)
    pos_weight_max = float((len(y) - pos) / pos)
    fixed = base_params(settings)

    def objective(trial: optuna.Trial) -> float:
        scores, iterations, boosters = cv_trees(fixed | suggest_params(trial, pos_weight_max), matrices, settings,
                                                trial)
        oof[trial.number] = [validation_margin(b, dvalid) for b, (_, dvalid) in zip(boosters, matrices, strict=True)]
        trial.set_user_attr("best_iteration", int(round(float(np.mean(iterations)))))
        trial.set_user_attr("fold_values", [round(s, 6) for s in scores])
        return float(np.mean(scores))

    return objective


def trial_logger(n_trials: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """One log line per trial: its state and value, the best so far, its params."""

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_value if completed else None
        logger.info(
            "trial %d %s value=%s best=%s (%d/%d finished) %s",
            trial.number, trial.state.name,
            f"{trial.value:.5f}" if trial.value is not None else "-",
            f"{best:.5f}" if best is not None else "-",
            done, n_trials,
            {k: round(v, 4) if isinstance(v, float) else v for k, v in trial.params.items()},
        )

    return log_trial


def tune(
    dev: pd.DataFrame,
    folds: Folds,
    schema: FeatureSchema,
    settings: Settings,
    *,
    test_as_of: pd.Timestamp | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    data_key: str = "",
) -> TuneResult:
    """Run (or resume) the study on ``folds`` of ``dev``; return the best trial's params.

    ``storage`` defaults to ``settings.optuna_storage``; ``study_name`` to :func:`study_name_for`.
    """
    cfg = settings.training
    name = study_name or study_name_for(settings, test_as_of, data_key)
    study, n_before, finished = open_study(settings, name, storage or settings.optuna_storage)
    remaining = cfg.n_trials - finished
    started = time.monotonic()
    oof: dict[int, list[np.ndarray]] = {}
    if remaining > 0:
        logger.info("study %s: %d finished, running %d more over %d folds (timeout %.0f s)",
                    name, finished, remaining, len(folds), cfg.timeout_seconds)
        study.optimize(cv_objective(dev, folds, schema, settings, oof), n_trials=remaining,
                       timeout=cfg.timeout_seconds, callbacks=[trial_logger(cfg.n_trials)])
    else:
        logger.info("study %s: budget of %d trials already spent; not tuning", name, cfg.n_trials)

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise TuningBudgetError(
            f"study {name} has no completed trial after {time.monotonic() - started:.0f} s; "
            "raise training.timeout_seconds or training.n_trials, or turn off training.pruning"
        )
    best = study.best_trial
    return TuneResult(
        study=study,
        best_params=base_params(settings) | best.params,
        best_iteration=int(best.user_attrs["best_iteration"]),
        best_value=float(best.value),
        trials=trials_frame(study),
        n_run_now=len(study.get_trials(deepcopy=False)) - n_before,
        best_oof=oof.get(best.number),
    )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, params, best_iteration, duration (seconds)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else np.nan
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "best_iteration": t.user_attrs.get("best_iteration"),
                "duration_s": duration,
                **{f"param_{k}": v for k, v in t.params.items()},
            }
        )
    return pd.DataFrame(rows)
