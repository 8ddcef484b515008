"""Flow: settings → read → validate → report cards of the published lists (``serving.outcome_store``).

The weekly ``score`` flow runs :func:`outcomes_task` before scoring, so each list's report shows
the history and the decay alarm; ``churnflow outcomes`` runs it on its own.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from churnflow.features.contracts import Tables
from churnflow.features.settings import Settings
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


@task(name="outcomes", **(retry_io | {"retries": 1}), **task_options)
def outcomes_task(settings: Settings, tables: Tables) -> Outcomes:
    """Cards written once and logged to MLflow (a retry re-reads the cards already written)."""
    outcomes = update_outcomes(settings, tables)
    logger = get_run_logger()
    for day in outcomes.written:
        logger.info("report card written for the list of %s", day)
    if outcomes.alarm.get("alarm"):
        logger.warning(outcomes.alarm["message"])
    return outcomes


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


@flow(name="outcomes", flow_run_name=run_name("outcomes"), validate_parameters=True)
def outcomes_flow(config: str | None = None) -> dict[str, Any]:
    """Report cards for every published list whose horizon has passed in today's data."""
    settings = settings_task(config)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, require_label=False)
    return outcomes_result(outcomes_task(settings, tables))
