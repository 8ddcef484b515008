"""Flow: settings → read → validate → load the model → ``serving.weekly.score_week`` → publish.

The recipe of a week's outputs lives in ``serving/weekly.py``; here each step that deserves its
own state gets a task: reading and loading the model may be retried (transient I/O), scoring
and publishing are one task each so a failed run shows which of them failed and why.

With ``[compute] engine = "dask"`` the week is scored by one task on the cluster
(``DaskTaskRunner``, ``flows.engine``) with ``serving.partitioned.score_week_partitioned``; the
outputs are the local engine's, and publishing is the same atomic step in the flow's process.
``scores.parquet`` is written ahead by the workers into a hidden folder beside the dated ones
(never through the flow's memory), linked into the published folder, then discarded.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from churnflow.features.contracts import Tables, check_as_of
from churnflow.features.partitioned import read_partitioned
from churnflow.features.settings import Settings
from churnflow.flows.engine import dask_task_runner, engine_client
from churnflow.flows.outcomes_flow import cards_logged, outcomes_task
from churnflow.flows.summaries import reason_phrases
from churnflow.flows.tasks import (
    parse_as_of,
    read_sources_task,
    retry_io,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from churnflow.serving.outcomes import Outcomes
from churnflow.serving.partitioned import score_week_partitioned
from churnflow.serving.publish import (
    ListTable,
    publish_week,
    read_holdouts,
    read_previous_list,
    standard_writers,
)
from churnflow.serving.weekly import WeeklyOutputs, score_week, scoring_date
from churnflow.training.bundle import ModelBundle
from churnflow.training.registry import load_bundle


@task(name="load-model", **retry_io, **task_options)
def load_model_task(settings: Settings, version: str | None) -> tuple[ModelBundle, str]:
    bundle, version = load_bundle(settings, version)
    get_run_logger().info("model %s version %s", settings.tracking.model_name, version)
    return bundle, version


@task(name="score-week", **task_options)
def score_week_task(tables: Tables, day: pd.Timestamp, bundle: ModelBundle, version: str,
                    settings: Settings, force: bool, outcomes: Outcomes | None = None) -> WeeklyOutputs:
    previous = read_previous_list(settings.output_dir, day)
    outputs = score_week(tables, day, bundle, version, settings, previous_list=previous, force=force,
                         earlier_holdouts=read_holdouts(settings.output_dir, day), outcomes=outcomes)
    for warning in outputs.warnings:
        get_run_logger().warning(warning)
    get_run_logger().info("scored %d customers in %d partition(s); %d on the list", len(outputs.scores),
                          outputs.n_partitions, len(outputs.priority_list))
    return outputs


@task(name="publish", **(retry_io | {"retries": 1, "retry_delay_seconds": 2}), **task_options)
def publish_task(settings: Settings, outputs: WeeklyOutputs) -> str:
    """Folder and list table as one unit (``serving.publish.publish_week``), so a retry is safe."""
    files = standard_writers(outputs.scores, outputs.priority_list, outputs.summary, outputs.report_html)
    url = settings.serving.list_database_url
    table = ListTable(settings.url_or_path(url), settings.serving.list_table, outputs.team_list) if url else None
    return str(publish_week(settings.output_dir, outputs.as_of, files, table))


@task(name="score-week-on-dask", **task_options)
def score_week_dask_task(settings: Settings, as_of: pd.Timestamp | None, bundle: ModelBundle, version: str,
                         force: bool) -> WeeklyOutputs:
    """The week scored on the cluster, partition by partition (``serving.partitioned``); runs on
    a worker through the ``DaskTaskRunner`` and drives the cluster with the runner's client."""
    with engine_client():
        raw = read_partitioned(settings)
        outputs = score_week_partitioned(raw, as_of, bundle, version, settings, force=force,
                                         previous_list=partial(read_previous_list, settings.output_dir),
                                         earlier_holdouts=partial(read_holdouts, settings.output_dir),
                                         outcomes=partial(cards_logged, settings))
    for warning in [*outputs.notes, *outputs.warnings]:
        get_run_logger().warning(warning)
    get_run_logger().info("scored %d customers in %d partition(s) on the Dask engine; %d on the list",
                          len(outputs.scores), outputs.n_partitions, len(outputs.priority_list))
    return outputs


@flow(name="score-on-dask", flow_run_name=run_name("score-on-dask"), validate_parameters=False)
def score_on_dask_flow(settings: Settings, as_of: str | None, model_version: str | None,
                       force: bool) -> dict[str, Any]:
    """``score_flow`` on the Dask engine (its task runner is set from ``[compute]``)."""
    bundle, version = load_model_task(settings, model_version)
    outputs = score_week_dask_task.submit(settings, parse_as_of(as_of), bundle, version, force).result()
    try:
        folder = publish_task(settings, outputs)  # here, in the flow's process: the folder and DB are its own
    finally:
        outputs.discard()  # scores.parquet was written ahead by the workers: linked into the folder, or failed
    get_run_logger().info("published %s", folder)
    reasons = outputs.summary.get("top_reasons_listed") or {}
    return {"folder": folder, "as_of": str(outputs.as_of.date()), "summary": outputs.summary,
            "reason_phrases": reason_phrases(bundle.dictionary, reasons)}


@flow(name="score", flow_run_name=run_name("score"), validate_parameters=True)
def score_flow(config: str | None = None, as_of: str | None = None, model_version: str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Publish the retention-priority list as of ``as_of`` (default: computed when the run starts)."""
    settings = settings_task(config)
    if settings.compute.engine == "dask":
        on_dask = score_on_dask_flow.with_options(task_runner=dask_task_runner(settings))
        return on_dask(settings, as_of, model_version, force)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, require_label=False)  # scoring needs no churn flag
    if as_of:
        check_as_of(tables, parse_as_of(as_of))  # a user's date after the data: said, not scored
    day = scoring_date(tables, parse_as_of(as_of))
    bundle, version = load_model_task(settings, model_version)
    outcomes = outcomes_task(settings, tables)
    outputs = score_week_task(tables, day, bundle, version, settings, force, outcomes)
    folder = publish_task(settings, outputs)
    get_run_logger().info("published %s", folder)
    reasons = outputs.summary.get("top_reasons_listed") or {}
    return {"folder": folder, "as_of": str(day.date()), "summary": outputs.summary,
            "reason_phrases": reason_phrases(bundle.dictionary, reasons)}
