"""Flow: settings → read → validate → load the model → ``serving.weekly.score_week`` → publish.

The recipe of a week's outputs lives in ``serving/weekly.py``; here each step that deserves its
own state gets a task: reading and loading the model may be retried (transient I/O), scoring
and publishing are one task each so a failed run shows which of them failed and why.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from churnflow.features.contracts import Tables
from churnflow.features.settings import Settings
from churnflow.flows.tasks import (
    parse_as_of,
    read_sources_task,
    retry_io,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from churnflow.serving.publish import ListTable, publish_week, read_previous_list, standard_writers
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
                    settings: Settings, force: bool) -> WeeklyOutputs:
    previous = read_previous_list(settings.output_dir, day)
    outputs = score_week(tables, day, bundle, version, settings, previous_list=previous, force=force)
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
    table = ListTable(settings.url_or_path(url), settings.serving.list_table, outputs.priority_list) if url else None
    return str(publish_week(settings.output_dir, outputs.as_of, files, table))


@flow(name="score", flow_run_name=run_name("score"), validate_parameters=True)
def score_flow(config: str | None = None, as_of: str | None = None, model_version: str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Publish the retention-priority list as of ``as_of`` (default: computed when the run starts)."""
    settings = settings_task(config)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, require_label=False)  # scoring needs no churn flag
    day = scoring_date(tables, parse_as_of(as_of))
    bundle, version = load_model_task(settings, model_version)
    outputs = score_week_task(tables, day, bundle, version, settings, force)
    folder = publish_task(settings, outputs)
    get_run_logger().info("published %s", folder)
    return {"folder": folder, "as_of": str(day.date()), "summary": outputs.summary}
