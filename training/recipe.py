"""The training recipe: validated tables and settings in, one complete trained model out.

Pure Python (no Prefect, no MLflow), so a model can be trained from a Python session, a test or
a benchmark exactly as the ``train`` flow trains it. The order of the steps is the recipe:

1. plan the as-of dates (``training.split.plan_for``) and build the training, validation and
   test snapshots with one feature schema;
2. tune (Optuna, resumable study) on training + validation;
3. fit the tuned booster and its calibrator; the segment boundaries come from the latest
   training snapshot, the drift reference from the test snapshot;
4. fit the untuned baseline through the same path, evaluate both beside the simple baselines on
   the test rows, and store the evaluation in the bundle;
5. explain (SHAP) and run the behavioural checks on the test rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.build import infer_schema
from features.contracts import Tables
from features.dictionary import dictionary_records
from features.profile import fit_reference
from features.segments import fit_segments
from features.settings import Settings
from training.bundle import ModelBundle
from training.evaluate import Evaluation, attach_metrics, evaluate
from training.explain import behavioural_checks, explain
from training.fit import fit_baseline, fit_tuned
from training.split import SplitPlan, plan_for, training_snapshots
from training.tune import TuneResult, tune

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    bundle: ModelBundle
    """Complete: schema, dictionary, segments, reference, metrics."""
    evaluation: Evaluation
    """Metrics of the model that never saw the test rows, beside the baselines."""
    tuning: TuneResult
    plan: SplitPlan
    importance: pd.DataFrame
    """SHAP importance table (feature, mean_abs_shap, share)."""
    checks: list[tuple[str, bool, str]]
    """Behavioural checks: (name, passed, detail)."""
    plots: dict[str, Path]
    """Evaluation and SHAP plots (in ``plot_dir``; empty without one)."""
    fingerprint: dict[str, Any]
    """``tables.fingerprint()``: which data the model was trained on."""
    test: pd.DataFrame
    """The test rows (the promotion gate may re-score a champion on them)."""


def train_model(tables: Tables, settings: Settings, *, plot_dir: Path | None = None) -> TrainedModel:
    """Train, evaluate and explain one churn model from validated tables (see the module doc)."""
    plan = plan_for(tables, settings)
    logger.info("as-of dates: %s", plan.to_dict())
    schema = infer_schema(tables, settings)
    train, valid, test = training_snapshots(tables, plan, settings, schema)
    logger.info("snapshots: %d train, %d valid, %d test rows; churn rate %.3f / %.3f / %.3f",
                len(train), len(valid), len(test), train["label"].mean(), valid["label"].mean(),
                test["label"].mean())

    tuned = tune(train, valid, schema, settings, test_as_of=plan.test)
    bundle = fit_tuned(train, valid, schema, settings, tuned.best_params, tuned.best_iteration,
                       dictionary_records(schema))
    latest_train = train.loc[train["as_of"] == train["as_of"].max()]
    bundle.segments = fit_segments(latest_train, schema, settings.features.value_column)
    bundle.reference = fit_reference(test, bundle.predict_proba(test), schema)
    baseline = fit_baseline(train, valid, schema, settings)

    evaluation = evaluate(bundle, train, test, settings, baseline=baseline, plot_dir=plot_dir)
    bundle = attach_metrics(bundle, evaluation)
    explanation = explain(bundle, test, plot_dir, seed=settings.training.seed)
    checks = behavioural_checks(bundle, test, settings)
    for name, passed, detail in checks:
        (logger.info if passed else logger.warning)("check %s: %s (%s)", name, "pass" if passed else "FAIL", detail)
    return TrainedModel(
        bundle=bundle,
        evaluation=evaluation,
        tuning=tuned,
        plan=plan,
        importance=explanation.importance,
        checks=checks,
        plots={**evaluation.plots, **explanation.plots},
        fingerprint=tables.fingerprint(),
        test=test,
    )
