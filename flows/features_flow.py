"""Flow: one point-in-time feature table for an as-of date, written with its dictionary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task

from churnflow.features.build import build_features, infer_schema
from churnflow.features.contracts import Tables
from churnflow.features.export import write_feature_table
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.flows.tasks import (
    parse_as_of,
    read_sources_task,
    run_name,
    settings_task,
    task_options,
    validate_task,
)
from churnflow.serving.weekly import scoring_date


@task(name="build-features", **task_options)
def build_features_task(tables: Tables, as_of: pd.Timestamp, settings: Settings) -> tuple[pd.DataFrame, FeatureSchema]:
    schema = infer_schema(tables, settings)
    return build_features(tables, as_of, settings, schema), schema


@flow(name="build_features", flow_run_name=run_name("build-features"), validate_parameters=True)
def build_features_flow(config: str | None = None, as_of: str | None = None, out: str = "") -> dict[str, str]:
    """Features as of ``as_of`` (default: latest complete day) from data strictly before it."""
    settings = settings_task(config)
    raw = read_sources_task(settings)
    cut = parse_as_of(as_of)
    tables = validate_task(settings, raw, cut)
    day = scoring_date(tables, cut)  # the same default as scoring: the day after the data end
    frame, schema = build_features_task(tables, day, settings)
    target = Path(out) if out else settings.path(f"outputs/features/features_{day.date()}.parquet")
    paths = write_feature_table(frame, schema, target)
    get_run_logger().info("wrote %d customers x %d features to %s", len(frame), len(schema.features), target)
    return {"as_of": str(day.date()), "rows": str(len(frame)), **{k: str(v) for k, v in paths.items()}}
