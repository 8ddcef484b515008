"""Flow: settings → read → validate → report cards of the published lists (``serving.outcome_store``).

The weekly ``score`` flow runs :func:`outcomes_task` before scoring, so each list's report shows
the history and the decay alarm; ``churnflow outcomes`` runs it on its own. With
``[compute] engine = "dask"`` the cards are computed on the cluster from the partitioned data
(:func:`outcomes_dask_task`; the score flow does it inside its Dask task, on the partitions it
has validated anyway).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from churnflow.features.contracts import Tables
from churnflow.features.partitioned import read_partitioned, worker_loss_as_error
from churnflow.features.settings import Settings
from churnflow.flows.engine import dask_task_runner, engine_client
from churnflow.flows.tasks import (
    read_sources_task,
    retry_io,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from churnflow.serving.outcome_store import update_outcomes
from churnflow.serving.outcomes import Outcomes
from churnflow.serving.partitioned import PartitionedOutcomes, outcome_source


def cards_logged(settings: Settings, tables: Tables | PartitionedOutcomes) -> Outcomes:
    """``update_outcomes`` with what it wrote and the decay alarm in the run's log."""
    outcomes = update_outcomes(settings, tables)
    logger = get_run_logger()
    for day in outcomes.written:
        logger.info("report card written for the list of %s", day)
    if outcomes.alarm.get("alarm"):
        logger.warning(outcomes.alarm["message"])
    return outcomes


@task(name="outcomes", **(retry_io | {"retries": 1}), **task_options)
def outcomes_task(settings: Settings, tables: Tables) -> Outcomes:
    """Cards written once and logged to MLflow (a retry re-reads the cards already written)."""
    return cards_logged(settings, tables)


@task(name="outcomes-on-dask", **(retry_io | {"retries": 1}), **task_options)
def outcomes_dask_task(settings: Settings) -> Outcomes:
    """The cards on the cluster: events stay partitioned on the workers, and each list's customers
    are judged by the partitions that hold their rows (``serving.partitioned.PartitionedOutcomes``)."""
    with engine_client(), worker_loss_as_error("report cards"):
        return cards_logged(settings, outcome_source(read_partitioned(settings), settings))


def outcomes_result(outcomes: Outcomes) -> dict[str, Any]:
    """Plain data for the CLI: one row per list, newest last."""
    rows = [{"as_of": c["as_of"], "closed": True, "model_version": c.get("model_version"),
             "predicted": c.get("predicted_churn_rate"), "realised": c.get("realised_churn_rate"),
             "roc_auc": c["model_quality"].get("roc_auc"), "lift": c["model_quality"].get("list_lift"),
             "effect": c["campaign"].get("difference"), "effect_ci95": c["campaign"].get("difference_ci95"),
             "verdict": c["campaign"].get("verdict")} for c in outcomes.cards]
    rows += [{"as_of": e["as_of"], "closed": False,
              "predicted": (e.get("estimate_before_horizon") or {}).get("churn_rate"),
              "roc_auc": (e.get("estimate_before_horizon") or {}).get("roc_auc")} for e in outcomes.estimates]
    return {"lists": sorted(rows, key=lambda r: r["as_of"]), "written": outcomes.written, "alarm": outcomes.alarm}


@flow(name="outcomes-on-dask", flow_run_name=run_name("outcomes-on-dask"), validate_parameters=False)
def outcomes_on_dask_flow(settings: Settings) -> dict[str, Any]:
    """``outcomes_flow`` on the Dask engine (its task runner is set from ``[compute]``)."""
    return outcomes_result(outcomes_dask_task.submit(settings).result())


@flow(name="outcomes", flow_run_name=run_name("outcomes"), validate_parameters=True)
def outcomes_flow(config: str | None = None) -> dict[str, Any]:
    """Report cards for every published list whose horizon has passed in today's data."""
    settings = settings_task(config)
    if settings.compute.engine == "dask":
        on_dask = outcomes_on_dask_flow.with_options(task_runner=dask_task_runner(settings))
        return on_dask(settings)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, require_label=False)
    return outcomes_result(outcomes_task(settings, tables))
