"""Flow: one point-in-time feature table for an as-of date, written with its dictionary.

With ``[compute] engine = "dask"`` the table is built on the cluster (``flows.engine``), partition
by partition with the local functions (``features.partitioned.build_features_partitioned``),
and written by the flow as the local engine writes it: the same file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task

from churnflow.features.build import build_features, infer_schema
from churnflow.features.contracts import Tables, check_as_of
from churnflow.features.export import write_feature_table
from churnflow.features.partitioned import (
    build_features_partitioned,
    read_partitioned,
    sorted_by_customer,
)
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.flows.engine import dask_task_runner, engine_client
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


@task(name="build-features-on-dask", **task_options)
def build_features_dask_task(settings: Settings, cut: pd.Timestamp | None
                             ) -> tuple[pd.DataFrame, FeatureSchema, pd.Timestamp]:
    """The same table on the cluster, partition by partition (runs on a worker through the
    ``DaskTaskRunner``); the partitions come back ordered by customer, as the local table is."""
    import dask

    with engine_client():
        parts, facts, day = build_features_partitioned(read_partitioned(settings), settings, cut)
        frame = sorted_by_customer(dask.compute(*parts))
    for note in facts.notes:  # as the local validate task says them
        get_run_logger().warning(note)
    return frame, facts.schema, day


@flow(name="build-features-on-dask", flow_run_name=run_name("build-features-on-dask"), validate_parameters=False)
def build_features_on_dask_flow(settings: Settings, cut: pd.Timestamp | None
                                ) -> tuple[pd.DataFrame, FeatureSchema, pd.Timestamp]:
    return build_features_dask_task.submit(settings, cut).result()


@flow(name="build_features", flow_run_name=run_name("build-features"), validate_parameters=True)
def build_features_flow(config: str | None = None, as_of: str | None = None, out: str = "") -> dict[str, str]:
    """Features as of ``as_of`` (default: latest complete day) from data strictly before it."""
    settings = settings_task(config)
    cut = parse_as_of(as_of)
    if settings.compute.engine == "dask":
        on_dask = build_features_on_dask_flow.with_options(task_runner=dask_task_runner(settings))
        frame, schema, day = on_dask(settings, cut)
    else:
        tables = validate_task(settings, read_sources_task(settings), cut)
        if cut is not None:
            check_as_of(tables, cut)  # a user's date after the data: said, not built
        day = scoring_date(tables, cut)  # the same default as scoring: the day after the data end
        frame, schema = build_features_task(tables, day, settings)
    target = Path(out) if out else settings.path(f"outputs/features/features_{day.date()}.parquet")
    paths = write_feature_table(frame, schema, target, day)
    get_run_logger().info("wrote %d customers x %d features to %s", len(frame), len(schema.features), target)
    return {"as_of": str(day.date()), "rows": str(len(frame)), **{k: str(v) for k, v in paths.items()}}
