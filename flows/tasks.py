"""Prefect tasks shared by the flows: thin wrappers, retries only where a retry can help.

Reading a source can fail for a moment (a database restarting, a network share); validating it
cannot get better by trying again, so only reads are retried, and only for errors that can be
transient (``transient_only``): a wrong encoding or a missing model fails at once. DataFrames
pass between tasks in memory: no result persistence and no input hashing
(``cache_policy=NONE``), which would cost seconds per million rows and store customer data in
Prefect's result storage.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from churnflow.features.contracts import Tables, load_tables, read_raw_tables
from churnflow.features.errors import ChurnflowError
from churnflow.features.settings import Settings, load_settings

task_options: dict[str, Any] = {"cache_policy": NONE, "persist_result": False}


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O hiccups, never an error that the same input repeats.

    Expected errors (``ChurnflowError``) and value errors (a Latin-1 file read as UTF-8, a bad
    date) give the same result on every try; retrying them only delays the message.
    """
    return not isinstance(state.data, ChurnflowError | ValueError | TypeError | KeyError) and not lasting_os_error(
        state.data)


_LASTING = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
            errno.EEXIST, errno.ENOENT)


def lasting_os_error(exc: object) -> bool:
    """An OS error that the same call repeats (no permission, read-only or full disk, a file where
    a folder should be): not transient, and the user's to fix, not a bug."""
    return isinstance(exc, OSError) and exc.errno in _LASTING


retry_io: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": transient_only}
"""Task options of a step that reads from outside (files, databases, the model registry)."""


@task(name="load-settings", **task_options)
def settings_task(config: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    return load_settings(config, **(overrides or {}))


@task(name="read-sources", **retry_io, **task_options)
def read_sources_task(settings: Settings) -> dict[str, pd.DataFrame | None]:
    raw = read_raw_tables(settings)
    rows = {k: (0 if v is None else len(v)) for k, v in raw.items()}
    get_run_logger().info("read sources: %s rows", rows)
    return raw


@task(name="validate-sources", **task_options)
def validate_task(settings: Settings, raw: dict[str, pd.DataFrame | None],
                  as_of: pd.Timestamp | None = None, require_label: bool = True) -> Tables:
    tables = load_tables(settings, as_of=as_of, raw=raw, require_label=require_label)
    get_run_logger().info(
        "validated: %d customers, %d events, data end %s%s",
        len(tables.customers),
        0 if tables.events is None else len(tables.events),
        tables.end_date.date(),
        f", dropped rows {tables.dropped_rows}" if tables.dropped_rows else "",
    )
    for note in tables.notes:
        get_run_logger().warning(note)
    return tables


def parse_as_of(value: str | None) -> pd.Timestamp | None:
    return None if value in (None, "") else pd.Timestamp(value).normalize().as_unit("ns")


def run_name(flow: str) -> Callable[[], str]:
    """Flow run names carry the as-of date ("latest" when it is computed at run time)."""

    def name() -> str:
        from prefect.runtime import flow_run

        return f"{flow}-{flow_run.parameters.get('as_of') or 'latest'}"

    return name
