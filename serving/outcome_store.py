"""Report cards of the published lists: read the folders, write ``outcome.json`` once, log to MLflow.

The judging is :mod:`serving.outcomes` (pure); this module is its I/O. For every dated folder
under ``serving.output_dir``:

* a card already written (``outcome.json``) is read back, never recomputed: it records what was
  known when the horizon closed, and later corrections of the data must not rewrite history;
* a list whose horizon has passed in today's data gets its card now (``scores.parquet`` with each
  customer's status, the tables cut to ``[T, T + H)``), logged to MLflow on the model version
  that produced the list, then written atomically and once (in that order: a failed log leaves
  no card behind, so the next run tries both again; a card already logged is not logged twice);
* a list whose horizon is still open keeps the label-free estimate its ``summary.json`` recorded
  when it was published.

MLflow: each model version gets one run, ``outcomes-v<version>`` (tag ``churnflow.outcomes_of``),
in the configured experiment; each card's metrics are logged there with the list's as-of date as
the step (days since 1970-01-01) and the version's logged-model id, so the model's page and the
run's charts show its realised record over time. The version carries the run's id as tag
``outcomes_run_id`` and its latest realised ROC-AUC as tags ``realised_roc_auc`` / ``realised_as_of``. A card already logged (its step present) is not logged again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from churnflow.features.contracts import Tables
from churnflow.features.settings import Settings
from churnflow.serving.outcomes import (
    OUTCOME_FILE,
    Outcomes,
    OutcomeSource,
    horizon_closed,
    latest_version_alarm,
    list_card,
    mlflow_step,
    realised_metrics,
    write_outcome_once,
)
from churnflow.serving.publish import published_folders

log = logging.getLogger(__name__)
OUTCOMES_TAG = "churnflow.outcomes_of"
LOGGED_MARK = "realised_n_scored"
"""Logged with every card (the list's size): its step being present means the card is logged."""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def update_outcomes(settings: Settings, tables: Tables | OutcomeSource, before: pd.Timestamp | None = None,
                    log_to_mlflow: bool = True) -> Outcomes:
    """Cards for every published list (before ``before``, if given) whose horizon has passed.

    ``tables``: today's validated tables (not cut at any date: each card cuts its own window), or
    the Dask engine's partitions of them (``serving.partitioned.PartitionedOutcomes``).
    """
    cards, estimates, written = [], [], []
    horizon, definition = settings.churn.horizon_days, settings.churn.definition
    if definition == "label":  # a fixed churn flag says nothing about what happened after a list
        return Outcomes(alarm={"alarm": False, "model_version": None, "lists": [],
                               "message": "No report cards: churn.definition = 'label' has no churn dates."})
    for folder in published_folders(settings.output_dir):
        if before is not None and folder.name >= pd.Timestamp(before).date().isoformat():
            continue
        if (folder / OUTCOME_FILE).exists():
            cards.append(_read_json(folder / OUTCOME_FILE))
            continue
        if not (folder / "summary.json").exists() or not (folder / "scores.parquet").exists():
            continue
        summary = _read_json(folder / "summary.json")
        days = int(summary.get("horizon_days", horizon))
        if not horizon_closed(pd.Timestamp(folder.name), days, tables.end_date):
            estimates.append({"as_of": folder.name, "horizon_closed": False,
                              "estimate_before_horizon": summary.get("estimate_before_horizon")})
            continue
        card = list_card(pd.read_parquet(folder / "scores.parquet"), summary, tables, days, definition)
        if log_to_mlflow:  # first: a failed log leaves no card, so the next run logs and writes it
            log_card(settings, card)
        if write_outcome_once(folder, card):
            written.append(folder.name)
        cards.append(_read_json(folder / OUTCOME_FILE))
    return Outcomes(cards=cards, estimates=estimates, written=written,
                    alarm=latest_version_alarm(cards, settings.serving.decay_alarm_drop))


def read_cards(output_root: Path) -> list[dict[str, Any]]:
    """Every written ``outcome.json`` under ``output_root``, oldest first (nothing computed)."""
    return [_read_json(f / OUTCOME_FILE) for f in published_folders(output_root) if (f / OUTCOME_FILE).exists()]


def log_card(settings: Settings, card: Mapping[str, Any]) -> str | None:
    """Log a card's realised metrics on its model version (see the module docstring); the run id."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    from churnflow.training.registry import experiment_id, registry_client

    version = card.get("model_version")
    if not version:
        return None
    client = registry_client(settings)
    name = settings.tracking.model_name
    try:
        model_version = client.get_model_version(name, str(version))
    except MlflowException:
        log.warning("model %s has no version %s in the registry: outcome of %s not logged", name, version,
                    card["as_of"])
        return None
    run_id = _outcomes_run(client, experiment_id(client, settings), name, str(version))
    step = mlflow_step(card["as_of"])
    if any(m.step == step for m in client.get_metric_history(run_id, LOGGED_MARK)):
        return run_id
    stamp = int(pd.Timestamp(card["horizon_end"]).timestamp() * 1000)  # deterministic, not wall-clock
    metrics = [Metric(key, value, stamp, step, model_id=model_version.model_id)
               for key, value in sorted(realised_metrics(card).items())]
    metrics.append(Metric(LOGGED_MARK, float(card["n_scored"]), stamp, step, model_id=model_version.model_id))
    client.log_batch(run_id, metrics=metrics)
    _tag_latest(client, name, str(version), card)
    return run_id


def _tag_latest(client: Any, name: str, version: str, card: Mapping[str, Any]) -> None:
    """The registry page of a version shows its latest realised ROC-AUC and the list it came from."""
    current = client.get_model_version(name, version).tags.get("realised_as_of", "")
    if card["as_of"] < current:
        return
    auc = card["model_quality"].get("roc_auc")
    client.set_model_version_tag(name, version, "realised_as_of", card["as_of"])
    client.set_model_version_tag(name, version, "realised_roc_auc", "" if auc is None else f"{auc:.4f}")


def _outcomes_run(client: Any, exp_id: str, name: str, version: str) -> str:
    """The run holding a model version's realised record, created on first use."""
    found = client.search_runs([exp_id], filter_string=f"tags.`{OUTCOMES_TAG}` = '{name}/{version}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=f"outcomes-v{version}",
                            tags={OUTCOMES_TAG: f"{name}/{version}", "model_version": version})
    client.set_terminated(run.info.run_id, "FINISHED")
    client.set_model_version_tag(name, version, "outcomes_run_id", run.info.run_id)
    return run.info.run_id
