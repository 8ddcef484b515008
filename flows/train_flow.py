"""Flow: settings → read → validate → ``training.recipe.train_model`` → register and promote.

The recipe (which snapshot fits what, in which order the model is completed) lives in
``training/recipe.py`` and runs the same from a Python session; here each step that deserves its
own state is a task: the read and the registration may be retried (transient I/O only), training
is one task whose failure names its reason.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from churnflow.features.build import left_out_note
from churnflow.features.contracts import Tables, check_as_of
from churnflow.features.settings import Settings
from churnflow.flows.summaries import train_result
from churnflow.flows.tasks import (
    parse_as_of,
    read_sources_task,
    retry_io,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from churnflow.training.recipe import TrainedModel, train_model
from churnflow.training.registry import RegistryResult, register_trained


@task(name="train-model", **task_options)
def train_model_task(tables: Tables, settings: Settings, plot_dir: Path) -> TrainedModel:
    trained = train_model(tables, settings, plot_dir=plot_dir)
    logger = get_run_logger()
    logger.info("as-of dates: %s", trained.plan.to_dict())
    for name, passed, detail in trained.checks:
        (logger.info if passed else logger.warning)("check %s: %s (%s)", name, "pass" if passed else "FAIL", detail)
    if not trained.evaluation.beats_recency:
        logger.warning("THE TUNED MODEL DOES NOT BEAT THE RECENCY BASELINE: not promoted")
    return trained


@task(name="register-and-promote", **retry_io, **task_options)
def register_task(settings: Settings, trained: TrainedModel, mlflow_run_name: str) -> RegistryResult:
    from prefect.runtime import flow_run

    # one key per flow run: a retry of this task completes the same MLflow run and model version
    result = register_trained(settings, trained, run_name=mlflow_run_name, registration_key=flow_run.id)
    get_run_logger().info("registered version %s: %s (%s)", result.version, result.decision, result.reason)
    return result


@flow(name="train", flow_run_name=run_name("train"), validate_parameters=True)
def train_flow(config: str | None = None, as_of: str | None = None, trials: int | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Train as if today were ``as_of`` (default: with all data); register and maybe promote."""
    overrides = {"training": {k: v for k, v in {"n_trials": trials, "timeout_seconds": timeout}.items()
                              if v is not None}}
    settings = settings_task(config, overrides)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, parse_as_of(as_of))
    if as_of:
        check_as_of(tables, parse_as_of(as_of))
    with tempfile.TemporaryDirectory(prefix="churnflow-plots-") as plot_dir:
        trained = train_model_task(tables, settings, Path(plot_dir))
        result = register_task(settings, trained, f"train-{as_of or trained.plan.test.date()}")
    summary = train_result(settings, trained, result)
    left_out = [note for note in [left_out_note(trained.bundle.schema)] if note]
    summary["notes"] = list(tables.notes) + left_out + summary["notes"]  # what the data made churnflow decide
    return summary
