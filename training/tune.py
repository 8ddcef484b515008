"""Optuna search over XGBoost hyperparameters, resumable and reproducible.

The study lives in persistent storage (SQLite under ``mlruns/`` by default) under a name derived
from the model and the test as-of date, so a killed or timed-out run is simply rerun: it keeps the
finished trials and runs only the rest of the budget (``n_trials`` is the study's total). Trials a
killed process left RUNNING are marked FAIL and do not count. Each trial trains with early stopping
on the validation snapshot; unpromising trials are pruned by a median rule on the same metric.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from optuna.trial import TrialState
from optuna_integration import XGBoostPruningCallback

from features.io import ensure_sqlite_folder
from features.schema import FeatureSchema
from features.settings import Settings

logger = logging.getLogger(__name__)

# objective setting -> (XGBoost eval_metric, Optuna direction)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "pr_auc": ("aucpr", "maximize"),
    "roc_auc": ("auc", "maximize"),
    "log_loss": ("logloss", "minimize"),
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TuneResult:
    study: optuna.Study
    best_params: dict[str, Any]
    """Complete XGBoost params (fixed + tuned) of the best trial, ready for ``xgb.train``."""
    best_iteration: int
    best_value: float
    trials: pd.DataFrame
    n_run_now: int
    """Trials started by this invocation (0 when the budget was already spent)."""


PRUNE_EVERY = 10


class SparsePruningCallback(XGBoostPruningCallback):
    """Optuna's XGBoost pruning callback, consulted every ``PRUNE_EVERY`` rounds.

    Each report is a write to the study's storage; reporting every round made trials ~60 %
    slower at 100k customers (benchmarks/bench_tuning.py) for no better pruning decisions.
    """

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        if epoch % PRUNE_EVERY:
            return False
        return super().after_iteration(model, epoch, evals_log)


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


def study_name_for(settings: Settings, test_as_of: pd.Timestamp | None) -> str:
    """Explicit ``training.study_name`` or ``<model>-<test as-of>-<objective>``.

    Deterministic, so a rerun for the same data resumes the same study; the objective is part of
    the name because a study's direction cannot change.
    """
    if settings.training.study_name:
        return settings.training.study_name
    date = pd.Timestamp(test_as_of).date().isoformat() if test_as_of is not None else "snapshot"
    return f"{settings.tracking.model_name}-{date}-{settings.training.objective}"


def label_array(frame: pd.DataFrame) -> np.ndarray:
    return frame["label"].to_numpy(dtype=np.float64)


def make_dmatrix(frame: pd.DataFrame, schema: FeatureSchema, with_label: bool = True) -> xgb.DMatrix:
    """Model matrix with the schema's feature order and category levels (unseen -> missing)."""
    return xgb.DMatrix(
        schema.to_model_frame(frame),
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


def tune(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    schema: FeatureSchema,
    settings: Settings,
    *,
    test_as_of: pd.Timestamp | None = None,
    study_name: str | None = None,
    storage: str | None = None,
) -> TuneResult:
    """Run (or resume) the study and return the best trial's params and iteration.

    ``storage`` defaults to ``settings.optuna_storage``; ``study_name`` to :func:`study_name_for`.
    """
    cfg = settings.training
    metric = eval_metric(cfg.objective)
    url = storage or settings.optuna_storage
    ensure_sqlite_folder(url)  # Optuna does not create it
    name = study_name or study_name_for(settings, test_as_of)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from us
    rdb = optuna.storages.get_storage(url)
    optuna.create_study(
        storage=rdb, study_name=name, direction=direction(cfg.objective), load_if_exists=True
    )
    fail_stale_trials(rdb, name)
    existing = optuna.load_study(study_name=name, storage=rdb).get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in existing)
    remaining = cfg.n_trials - finished
    # Seed offset by the number of existing trials: a resumed study must not replay the random
    # start-up suggestions of the first run (a fresh study is still exactly reproducible).
    sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(existing))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20, interval_steps=PRUNE_EVERY)
        if cfg.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner)

    y_train = label_array(train)
    pos = max(float(y_train.sum()), 1.0)
    pos_weight_max = float((len(y_train) - pos) / pos)
    dtrain = make_dmatrix(train, schema)
    dvalid = make_dmatrix(valid, schema)
    fixed = base_params(settings)

    def objective(trial: optuna.Trial) -> float:
        params = fixed | suggest_params(trial, pos_weight_max)
        callbacks = [SparsePruningCallback(trial, f"validation-{metric}")] if cfg.pruning else []
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=cfg.max_boost_rounds,
            evals=[(dvalid, "validation")],
            early_stopping_rounds=cfg.early_stopping_rounds,
            callbacks=callbacks,
            verbose_eval=False,
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        return float(booster.best_score)

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        best = study.best_value if any(t.state == TrialState.COMPLETE for t in study.trials) else None
        logger.info(
            "trial %d %s value=%s best=%s (%d/%d finished) %s",
            trial.number,
            trial.state.name,
            f"{trial.value:.5f}" if trial.value is not None else "-",
            f"{best:.5f}" if best is not None else "-",
            done,
            cfg.n_trials,
            {k: round(v, 4) if isinstance(v, float) else v for k, v in trial.params.items()},
        )

    started = time.monotonic()
    n_before = len(existing)
    if remaining > 0:
        logger.info(
            "study %s: %d finished, running %d more (timeout %.0f s)", name, finished, remaining, cfg.timeout_seconds
        )
        study.optimize(
            objective, n_trials=remaining, timeout=cfg.timeout_seconds, callbacks=[log_trial]
        )
    else:
        logger.info("study %s: budget of %d trials already spent; not tuning", name, cfg.n_trials)
    n_run_now = len(study.get_trials(deepcopy=False)) - n_before

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(
            f"study {name} has no completed trial after {time.monotonic() - started:.0f} s; "
            "raise training.timeout_seconds or training.n_trials, or turn off training.pruning"
        )
    best = study.best_trial
    return TuneResult(
        study=study,
        best_params=fixed | best.params,
        best_iteration=int(best.user_attrs["best_iteration"]),
        best_value=float(best.value),
        trials=trials_frame(study),
        n_run_now=n_run_now,
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
