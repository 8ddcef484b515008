"""Flow: load champion → features → score → drift gate → reasons → priority list → publish."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from features.build import latest_as_of
from features.contracts import Tables, cut_at
from features.settings import Settings
from flows.tasks import (
    parse_as_of,
    read_sources_task,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from serving.priority import build_summary
from serving.publish import (
    publish_outputs,
    read_previous_list,
    standard_writers,
    write_list_to_database,
)
from serving.report import render_report
from serving.score import drift_gate, priority_list_with_reasons, score_customers, scores_table
from training.bundle import ModelBundle
from training.registry import load_bundle


@task(name="load-model", **task_options)
def load_model_task(settings: Settings, version: str | None) -> tuple[ModelBundle, str]:
    bundle, version = load_bundle(settings, version)
    get_run_logger().info("model %s version %s", settings.tracking.model_name, version)
    return bundle, version


@task(name="score", **task_options)
def score_task(tables: Tables, as_of: pd.Timestamp, bundle: ModelBundle, settings: Settings):
    result = score_customers(tables, as_of, bundle, settings)
    get_run_logger().info("scored %d customers in %d partition(s)", len(result.scored), result.n_partitions)
    return result


@task(name="drift-gate", **task_options)
def drift_task(drift: pd.DataFrame, settings: Settings, force: bool) -> list[str]:
    messages = drift_gate(drift, settings, force)
    for m in messages:
        get_run_logger().warning(m)
    return messages


@task(name="priority-list", **task_options)
def priority_task(tables: Tables, as_of: pd.Timestamp, bundle: ModelBundle, settings: Settings,
                  scored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    previous = read_previous_list(settings.output_dir, as_of)
    return priority_list_with_reasons(tables, as_of, bundle, settings, scored, previous)


@task(name="publish", **task_options)
def publish_task(settings: Settings, as_of: pd.Timestamp, files: dict[str, Any]) -> str:
    return str(publish_outputs(settings.output_dir, as_of, files))


@task(name="write-list-to-database", retries=2, retry_delay_seconds=[2, 10], **task_options)
def database_task(priority_list: pd.DataFrame, settings: Settings, as_of: pd.Timestamp) -> int:
    return write_list_to_database(priority_list, settings.url_or_path(settings.serving.list_database_url),
                                  settings.serving.list_table, as_of)


@flow(name="score", flow_run_name=run_name("score"), validate_parameters=True)
def score_flow(config: str | None = None, as_of: str | None = None, model_version: str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Publish the retention-priority list as of ``as_of`` (default: computed when the run starts)."""
    settings = settings_task(config)
    raw = read_sources_task(settings)
    tables = validate_task(settings, raw, require_label=False)  # scoring needs no churn flag
    day = parse_as_of(as_of) or latest_as_of(tables)
    tables = cut_at(tables, day)
    bundle, version = load_model_task(settings, model_version)
    result = score_task(tables, day, bundle, settings)
    warnings = drift_task(result.drift, settings, force)
    priority_list, dropped, scored = priority_task(tables, day, bundle, settings, result.scored)
    extra = {
        "model_name": settings.tracking.model_name,
        "model_version": version,
        "input_fingerprint": tables.fingerprint(),
        "warnings": warnings,
        "test_metrics": {k: v for k, v in bundle.metrics.get("test", {}).items() if isinstance(v, (int, float))},
    }
    summary = build_summary(scored, priority_list, dropped, result.drift, settings, day, extra=extra)
    html = render_report(summary, priority_list, gains=bundle.metrics.get("gains"), drift=result.drift)
    files = standard_writers(scores_table(result.scored, version), priority_list, summary, html)
    folder = publish_task(settings, day, files)
    if settings.serving.list_database_url:
        database_task(priority_list, settings, day)
    get_run_logger().info("published %s", folder)
    return {"folder": folder, "as_of": str(day.date()), "summary": summary}
