"""The training recipe: validated tables and settings in, one complete trained model out.

Pure Python (no Prefect, no MLflow), so a model can be trained from a Python session, a test or
a benchmark exactly as the ``train`` flow trains it.

1. **Plan and build.** ``plan_for`` picks the as-of dates; one feature schema builds the
   *development* rows (every labelled row before the test rows) and the *test* rows: the latest
   complete label window for event data, a stratified ``training.test_size`` share of a snapshot
   table. What is wrong with the data (no events before the as-of date, no active customer at a
   planned date, labels of one class, too few churners per fold) is said here, before tuning.
2. **Choose, by cross-validation on the development rows only.** Folds are repeated stratified
   k-fold (snapshot tables) or rolling-origin validation dates (event data). Optuna tunes the
   tree on the mean fold metric (``training/tune.py``); then the tree, a linear model and their
   blends are compared on the same folds (``training/candidates.py``). The calibrator is fitted
   on the winner's out-of-fold predictions.
3. **Evaluate the model that never saw the test rows.** The winner is fitted on all development
   rows and scored on the test rows beside the baselines (recency, logistic regressions, a fixed
   shallow XGBoost: ``training/evaluate.py``); these are the metrics reported. Both registrable
   simple baselines are among the candidates of step 2 (the linear grid holds the logistic
   regression's ``C``, the study starts with the shallow XGBoost), so the cross-validation has
   already weighed them on many folds. When one of them still beats the chosen model on the
   test rows, the run says so loudly; it replaces the chosen model (``champion_choice``) only
   when it wins beyond test-row noise (paired bootstrap, ``evaluate.clearly_better``): a win
   within noise on a few hundred rows is a coin flip that, measured on the attrition table, lost
   on the held-out rows every time it was followed. A swap says that it was made on the test
   rows (its metric is optimistic by that).
4. **Register the model refitted on all labelled data the protocol allows.** Event data: every
   planned snapshot up to and including the test date (all of their label windows are
   complete); snapshot tables: all rows. The bundle records it in ``fitted_through`` (the test
   as-of date, or ``"all rows"``): the registered model has seen the test rows, so a promotion
   gate must not judge it on them, and must not judge an older champion on rows on or before its
   own ``fitted_through``.
5. **Describe the population it will score.** Segments and the drift reference come from the
   features of the customers active at the model's as-of date (the day after the data end),
   computed as the weekly scoring computes them, so scoring on that date shows no drift.
6. **Explain and check** the registered model (SHAP importance, behavioural checks) on the test
   rows.

With ``[compute] engine = "dask"`` the same steps run with the rows on a Dask cluster
(``_train_on_dask``; what runs where: ``training/distributed.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from churnflow.features.build import build_snapshots, infer_schema, snapshot_as_of
from churnflow.features.contracts import Tables
from churnflow.features.dictionary import dictionary_records
from churnflow.features.profile import fit_reference
from churnflow.features.schema import FeatureSchema
from churnflow.features.segments import fit_segments
from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.calibration import Calibrator
from churnflow.training.candidates import Choice, choose_model
from churnflow.training.evaluate import SIMPLE_BASELINES, Evaluation, baseline_choice, evaluate
from churnflow.training.explain import behavioural_checks, explain
from churnflow.training.fit import fit_bundle, oof_calibrator
from churnflow.training.split import SplitPlan, fold_positions, plan_for, training_snapshots
from churnflow.training.tune import Folds, TuneResult, short_hash, study_name_for, tune

logger = logging.getLogger(__name__)
ALL_ROWS = "all rows"


@dataclass(frozen=True)
class TrainedModel:
    bundle: ModelBundle
    """The registered model: complete (schema, dictionary, segments, reference, metrics)."""
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
    choice: Choice | None = None
    """The chosen family and every candidate's mean fold metric."""
    run_tags: dict[str, str] = field(default_factory=dict)
    """Extra tags of the MLflow run (the Dask engine: engine, tuning sample size, rows per fit)."""


def study_key(fingerprint: dict[str, Any], plan: SplitPlan, folds: Folds, schema: FeatureSchema,
              settings: Settings) -> str:
    """Hash of what a study's trials depend on: data, plan, folds, features, objective."""
    return short_hash({"data": fingerprint, "plan": plan.to_dict(), "folds": len(folds),
                       "features": schema.features, "objective": settings.training.objective})


def scoring_population(tables: Tables, settings: Settings, schema: FeatureSchema) -> pd.DataFrame:
    """Features of the customers the model will score first: at the day after the data end."""
    return build_snapshots(tables, [snapshot_as_of(tables)], settings, schema, with_labels=False)


def champion_choice(evaluation: Evaluation, settings: Settings) -> Choice | None:
    """The simple baseline to register instead of the chosen candidate, or None to keep it.

    A baseline replaces the candidate only when it beat it on the objective on the same test rows
    beyond their noise, and can be registered as a model (recency and the RFM regression use
    other feature sets).
    """
    name = evaluation.best_baseline
    if evaluation.beats_best_baseline or not evaluation.baseline_clearly_better or name not in SIMPLE_BASELINES:
        return None
    return baseline_choice(name, settings)


def _evaluate_candidate(dev: pd.DataFrame, test: pd.DataFrame, schema: FeatureSchema, settings: Settings,
                        choice: Choice, calibrator: Calibrator, plot_dir: Path | None, *,
                        fit: Callable[..., ModelBundle] = fit_bundle) -> tuple[Choice, Calibrator, Evaluation]:
    """Evaluate the chosen candidate; swap in a simple baseline that beat it (see the module doc).

    ``fit(rows, schema, choice, calibrator)`` fits a bundle (the Dask engine fits on its workers).
    """
    evaluation = evaluate(fit(dev, schema, choice, calibrator), dev, test, settings, plot_dir=plot_dir)
    baseline = champion_choice(evaluation, settings)
    if baseline is None:
        return choice, calibrator, evaluation
    lost, name = evaluation.verdict, evaluation.best_baseline
    calibrator = Calibrator(method="identity")  # as the baseline was evaluated
    known = (evaluation.baselines, {k: v for k, v in evaluation.scores.items() if k != "model"},
             [n for n in evaluation.notes if not n.startswith("BASELINE WINS")])
    evaluation = evaluate(fit(dev, schema, baseline, calibrator), dev, test, settings, plot_dir=plot_dir,
                          fitted_baselines=known)
    evaluation.notes.insert(0, f"{lost}. The registered model is therefore {name} itself (chosen on the "
                            "test rows: its test metric is optimistic by that choice).")
    logger.warning("the tuned candidate lost to a simple baseline on the test rows; registering the baseline")
    return baseline, calibrator, evaluation


def train_model(tables: Tables, settings: Settings, *, plot_dir: Path | None = None,
                client: Any = None) -> TrainedModel:
    """Train, evaluate, refit and explain one churn model from validated tables (see the module doc).

    ``[compute] engine = "dask"``: the same recipe on a Dask cluster (``training/distributed.py``),
    on ``client`` (a ``distributed.Client``) when given, else on the configured cluster.
    """
    if settings.compute.engine == "dask":
        return _train_on_dask(tables, settings, plot_dir, client)
    plan = plan_for(tables, settings)
    schema = infer_schema(tables, settings)
    dev, test = training_snapshots(tables, plan, settings, schema)
    folds = fold_positions(dev, plan, settings.training.seed)
    logger.info("as-of dates %s: %d development rows in %d folds, %d test rows; churn rate %.3f / %.3f",
                plan.to_dict(), len(dev), len(folds), len(test), dev["label"].mean(), test["label"].mean())
    fingerprint = tables.fingerprint()

    tuned = tune(dev, folds, schema, settings, test_as_of=plan.test,
                 data_key=study_key(fingerprint, plan, folds, schema, settings))
    choice = choose_model(dev, folds, schema, settings, tuned)
    choice, calibrator, evaluation = _evaluate_candidate(dev, test, schema, settings, choice,
                                                         oof_calibrator(choice, settings, plan.out_of_time), plot_dir)

    fitted = fit_bundle(pd.concat([dev, test], ignore_index=True), schema, choice, calibrator)
    return _complete(fitted, scoring_population(tables, settings, schema), settings, plot_dir, tuned=tuned,
                     choice=choice, evaluation=evaluation, plan=plan, test=test, fingerprint=fingerprint)


def _complete(fitted: ModelBundle, population: pd.DataFrame, settings: Settings, plot_dir: Path | None, *,
              tuned: TuneResult, choice: Choice, evaluation: Evaluation, plan: SplitPlan, test: pd.DataFrame,
              fingerprint: dict[str, Any], run_tags: dict[str, str] | None = None) -> TrainedModel:
    """Steps 5 and 6: the registered bundle described, explained and checked."""
    schema = fitted.schema
    bundle = replace(
        fitted,
        dictionary=dictionary_records(schema, population),
        segments=fit_segments(population, schema, settings.features.value_column),
        reference=fit_reference(population, fitted.predict_proba(population), schema),
        metrics=evaluation.to_dict() | {"family": choice.family, "candidates": choice.cv_scores},
        fitted_through=plan.test.date().isoformat() if plan.out_of_time else ALL_ROWS,
    )
    explanation = explain(bundle, test, plot_dir, seed=settings.training.seed)
    checks = behavioural_checks(bundle, test, settings)
    for name, passed, detail in checks:
        (logger.info if passed else logger.warning)("check %s: %s (%s)", name, "pass" if passed else "FAIL", detail)
    return TrainedModel(bundle=bundle, evaluation=evaluation, tuning=tuned, plan=plan,
                        importance=explanation.importance, checks=checks,
                        plots={**evaluation.plots, **explanation.plots}, fingerprint=fingerprint, test=test,
                        choice=choice, run_tags=dict(run_tags or {}))


# ---- the Dask engine (``[compute] engine = "dask"``) ------------------------------------------


def _train_on_dask(tables: Tables, settings: Settings, plot_dir: Path | None, client: Any) -> TrainedModel:
    from churnflow.training import distributed as dist

    with dist.client_for(settings, client) as cluster:
        return _train_partitions(cluster, dist.from_tables(cluster, tables, settings), settings, plot_dir)


def train_model_partitioned(settings: Settings, *, plot_dir: Path | None = None, client: Any = None) -> TrainedModel:
    """``train_model`` on the Dask engine straight from the configured sources: they are read,
    partitioned by customer and validated on the workers, so no process holds all the tables."""
    from churnflow.training import distributed as dist

    with dist.client_for(settings, client) as cluster:
        return _train_partitions(cluster, dist.from_sources(cluster, settings), settings, plot_dir)


def _train_partitions(cluster: Any, data: Any, settings: Settings, plot_dir: Path | None) -> TrainedModel:
    """The same steps on a Dask cluster: snapshots stay on the workers, Optuna tunes on a
    stratified sample with trials on the workers, the tree is fitted by ``xgboost.dask`` on all
    rows (``training/distributed.py`` says what runs where). ``data``: ``distributed.Partitioned``."""
    from churnflow.training import distributed as dist

    plan = plan_for(data.plan_tables(), settings)
    snapshots, facts = dist.snapshot_partitions(cluster, data, plan, settings)
    schema, rows = facts.schema, dist.split_rows(cluster, snapshots, plan, settings)
    sample, test = rows.sample, rows.test
    folds = fold_positions(sample, plan, settings.training.seed)
    key = short_hash([study_key(data.fingerprint, plan, folds, schema, settings), "dask", len(sample)])
    tuned = dist.tune_on_workers(cluster, sample, folds, schema, settings, study_name_for(settings, plan.test, key))
    choice = choose_model(sample, folds, schema, settings, tuned)
    choice, calibrator, evaluation = _evaluate_candidate(sample, test, schema, settings, choice,
                                                         oof_calibrator(choice, settings, plan.out_of_time), plot_dir,
                                                         fit=dist.dask_fitter(cluster, rows.dev))
    refit = dist.dask_fitter(cluster, rows.everything)
    fitted = refit(pd.concat([sample, test], ignore_index=True), schema, choice, calibrator)
    population = dist.population_on_workers(cluster, data, settings, facts)
    return _complete(fitted, population, settings, plot_dir, tuned=tuned, choice=choice, evaluation=evaluation,
                     plan=plan, test=test, fingerprint=data.fingerprint, run_tags=dist.run_tags(rows, choice))
