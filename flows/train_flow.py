"""Flow: snapshots → tune → fit → calibrate → evaluate → explain → register/promote.

Each task wraps one function of ``features/`` or ``training/``; the only decisions made here are
which snapshot feeds which step.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from features.build import infer_schema
from features.contracts import Tables
from features.dictionary import dictionary_records
from features.profile import fit_reference
from features.schema import FeatureSchema
from features.segments import fit_segments
from features.settings import Settings
from flows.tasks import (
    parse_as_of,
    read_sources_task,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from training.evaluate import attach_metrics, evaluate
from training.explain import behavioural_checks, explain
from training.fit import fit_baseline, fit_tuned
from training.registry import log_and_register
from training.split import SplitPlan, plan_for, training_snapshots
from training.tune import tune


@task(name="plan-snapshots", **task_options)
def plan_task(tables: Tables, settings: Settings) -> SplitPlan:
    plan = plan_for(tables, settings)
    get_run_logger().info("as-of dates: train %s, valid %s, test %s (out of time: %s)",
                          [str(d.date()) for d in plan.train], plan.valid, plan.test.date(), plan.out_of_time)
    return plan


@task(name="build-snapshots", **task_options)
def snapshots_task(tables: Tables, plan: SplitPlan, settings: Settings
                   ) -> tuple[FeatureSchema, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    schema = infer_schema(tables, settings)
    train, valid, test = training_snapshots(tables, plan, settings, schema)
    get_run_logger().info("snapshots: %d train, %d valid, %d test rows; churn rate %.3f / %.3f / %.3f",
                          len(train), len(valid), len(test), train["label"].mean(), valid["label"].mean(),
                          test["label"].mean())
    return schema, train, valid, test


@task(name="tune", **task_options)
def tune_task(train, valid, schema, settings, test_as_of):
    return tune(train, valid, schema, settings, test_as_of=test_as_of)


@task(name="fit-and-calibrate", **task_options)
def fit_task(train, valid, test, schema, settings, tuned):
    bundle = fit_tuned(train, valid, schema, settings, tuned.best_params, tuned.best_iteration,
                       dictionary_records(schema))
    latest_train = train.loc[train["as_of"] == train["as_of"].max()]
    bundle.segments = fit_segments(latest_train, schema, settings.features.value_column)
    bundle.reference = fit_reference(test, bundle.predict_proba(test), schema)
    baseline = fit_baseline(train, valid, schema, settings)
    return bundle, baseline


@task(name="evaluate", **task_options)
def evaluate_task(bundle, baseline, train, test, settings, plot_dir: Path):
    evaluation = evaluate(bundle, train, test, settings, baseline=baseline, plot_dir=plot_dir)
    return attach_metrics(bundle, evaluation), evaluation


@task(name="explain", **task_options)
def explain_task(bundle, test, settings, plot_dir: Path):
    explanation = explain(bundle, test, plot_dir, seed=settings.training.seed)
    checks = behavioural_checks(bundle, test, settings)
    for name, passed, detail in checks:
        (get_run_logger().info if passed else get_run_logger().warning)("check %s: %s (%s)",
                                                                         name, "pass" if passed else "FAIL", detail)
    return explanation, checks


@task(name="register-and-promote", retries=1, retry_delay_seconds=5, **task_options)
def register_task(settings, bundle, evaluation, test, tuned, plan, fingerprint, explanation, checks, plots, mlflow_run_name):
    return log_and_register(settings, bundle, evaluation, test, tune_result=tuned, plan=plan,
                            fingerprint=fingerprint, importance=explanation.importance, checks=checks,
                            plots=plots, run_name=mlflow_run_name)


@flow(name="train", flow_run_name=run_name("train"), validate_parameters=True)
def train_flow(config: str | None = None, as_of: str | None = None, trials: int | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Train as if today were ``as_of`` (default: with all data); register and maybe promote."""
    overrides = {"training": {k: v for k, v in {"n_trials": trials, "timeout_seconds": timeout}.items()
                              if v is not None}}
    settings = settings_task(config, overrides)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, parse_as_of(as_of))
    plan = plan_task(tables, settings)
    schema, train, valid, test = snapshots_task(tables, plan, settings)
    tuned = tune_task(train, valid, schema, settings, plan.test)
    bundle, baseline = fit_task(train, valid, test, schema, settings, tuned)
    with tempfile.TemporaryDirectory(prefix="churnflow-plots-") as tmp:
        plot_dir = Path(tmp)
        bundle, evaluation = evaluate_task(bundle, baseline, train, test, settings, plot_dir)
        explanation, checks = explain_task(bundle, test, settings, plot_dir)
        plots = {**evaluation.plots, **explanation.plots}
        result = register_task(settings, bundle, evaluation, test, tuned, plan, tables.fingerprint(),
                               explanation, checks, plots, f"train-{as_of or plan.test.date()}")
    if not evaluation.beats_recency:
        get_run_logger().warning("THE TUNED MODEL DOES NOT BEAT THE RECENCY BASELINE: not promoted")
    return {
        "run_id": result.run_id,
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "objective": result.objective,
        "metrics": evaluation.metrics,
        "baselines": evaluation.baselines,
        "comparison": evaluation.comparison.to_dict(orient="records"),
        "beats_recency": evaluation.beats_recency,
        "notes": list(evaluation.notes),
        "checks": [{"name": n, "passed": p, "detail": d} for n, p, d in checks],
        "plan": {"train": [str(d.date()) for d in plan.train], "valid": str(plan.valid.date()) if plan.valid is not None else "",
                 "test": str(plan.test.date()), "out_of_time": plan.out_of_time},
        "trials": int(len(tuned.trials)),
        "tracking_uri": settings.tracking_uri,
        "model_name": settings.tracking.model_name,
    }
