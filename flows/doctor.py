"""``churnflow doctor``: check everything a run needs and say what to fix, one row per check.

Checks, in order: the settings file loads; every configured data source exists, is readable and
passes validation; the MLflow tracking store is reachable; the registered model has a
``champion``; Prefect's API answers (or, with no ``PREFECT_API_URL``, what happens instead).
Every check runs even when an earlier one fails, so one call lists every problem. Heavy
libraries are imported inside the checks, so a broken settings file is reported at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

OK = "ok"
PROBLEM = "problem"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    todo: str = ""


def _message(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _settings_check(config: Path | None):
    from churnflow.features.settings import ConfigError, load_settings

    shown = str(config) if config else os.environ.get("CHURNFLOW_CONFIG", "churnflow.toml")
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return None, Check("settings", PROBLEM, _message(exc),
                           "fix the key named here in your settings file (see churnflow.toml)")
    source = shown if (config or Path(shown).exists()) else "embedded defaults (no churnflow.toml here)"
    return settings, Check("settings", OK, f"loaded {source}; paths relative to {settings.root}")


def _data_checks(settings) -> list[Check]:
    from churnflow.features.contracts import DataValidationError, load_tables
    from churnflow.features.settings import ConfigError
    from churnflow.features.sources import SourceError, read_source, source_label

    d = settings.data
    sources = {
        "customers": (d.customers, d.customers_table),
        "events": (d.events, d.events_table),
        "contacts": (d.contacts, d.contacts_table),
    }
    checks: list[Check] = []
    raw: dict = {}
    readable = True
    for what, (source, table) in sources.items():
        if not source:
            raw[what] = None
            checks.append(Check(f"data: {what}", OK, "not configured (optional)"))
            continue
        label = source_label(source, table)
        try:
            frame = read_source(source, table, settings, what)
        except SourceError as exc:
            readable = False
            hint = f"fix data.{what} (and data.{what}_table) in your settings"
            if "demo" in source:
                hint += ", or run `churnflow demo-data` to create the demo data"
            checks.append(Check(f"data: {what}", PROBLEM, _message(exc), hint))
            continue
        except Exception as exc:  # a corrupt file or an odd driver error: still one row, not a crash
            readable = False
            checks.append(Check(f"data: {what}", PROBLEM, f"{label}: {_message(exc)}",
                                f"check that data.{what} points at a readable CSV/Parquet file or table"))
            continue
        raw[what] = frame
        where = settings.path(source) if "://" not in source else label
        checks.append(Check(f"data: {what}", OK, f"{where}: {len(frame):,} rows"))
    if not readable:
        checks.append(Check("data: validation", PROBLEM, "skipped: a source above cannot be read",
                            "fix the unreadable source first"))
        return checks
    try:
        tables = load_tables(settings, raw=raw)
    except ConfigError as exc:
        checks.append(Check("data: validation", PROBLEM, _message(exc), "fix the [data] settings named here"))
    except DataValidationError as exc:
        checks.append(Check("data: validation", PROBLEM, _message(exc),
                            "fix the data or [data.columns]; or set data.drop_invalid_rows = true"))
    except (ValueError, KeyError) as exc:
        checks.append(Check("data: validation", PROBLEM, _message(exc),
                            "check the column mapping in [data.columns]"))
    else:
        dropped = f"; dropped rows {tables.dropped_rows}" if tables.dropped_rows else ""
        checks.append(Check("data: validation", OK,
                            f"{len(tables.customers):,} customers, data end {tables.end_date.date()}{dropped}"))
    return checks


def _mlflow_checks(settings) -> list[Check]:
    try:
        from mlflow.exceptions import MlflowException

        from churnflow.training.registry import CHAMPION, experiment_id, registry_client
    except Exception as exc:  # pragma: no cover - broken install
        return [Check("tracking store", PROBLEM, f"cannot import MLflow: {_message(exc)}",
                      "reinstall: pip install -e .")]
    uri = settings.tracking_uri
    try:
        client = registry_client(settings)
        experiment_id(client, settings)
    except Exception as exc:
        return [
            Check("tracking store", PROBLEM, f"{uri}: {_message(exc)}",
                  "fix tracking.uri (a writable folder for sqlite:///, or a reachable server)"),
            Check("champion model", PROBLEM, "skipped: the tracking store is not reachable",
                  "fix the tracking store first"),
        ]
    checks = [Check("tracking store", OK, f"{uri} (experiment '{settings.tracking.experiment}')")]
    name = settings.tracking.model_name
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        checks.append(Check("champion model", PROBLEM,
                            f"no version of model '{name}' has the alias '{CHAMPION}'",
                            "run `churnflow train` (it registers a model and promotes the first one)"))
    except Exception as exc:
        checks.append(Check("champion model", PROBLEM, f"cannot query the registry: {_message(exc)}",
                            "check tracking.uri and that the registry is reachable"))
    else:
        checks.append(Check("champion model", OK, f"'{name}' version {version.version} is the champion"))
    return checks


def _decay_check(settings) -> Check:
    """The decay alarm over the report cards already written (``churnflow outcomes`` writes them)."""
    from churnflow.serving.outcome_store import read_cards
    from churnflow.serving.outcomes import latest_version_alarm

    alarm = latest_version_alarm(read_cards(settings.output_dir), settings.serving.decay_alarm_drop)
    if alarm.get("alarm"):
        return Check("model decay", PROBLEM, alarm["message"],
                     "retrain: `churnflow train` (a better challenger is promoted), then `churnflow score`")
    return Check("model decay", OK, alarm["message"])


def _prefect_check() -> Check:
    url = os.environ.get("PREFECT_API_URL", "")
    source = "PREFECT_API_URL"
    if not url:
        try:  # a Prefect profile can set it too (`prefect config set PREFECT_API_URL=...`)
            from prefect.settings import get_current_settings

            url = get_current_settings().api.url or ""
            source = "the Prefect profile's PREFECT_API_URL"
        except Exception:  # pragma: no cover - no usable prefect settings means "not set"
            url = ""
    if not url:
        return Check("prefect", OK,
                     "PREFECT_API_URL is not set: each flow run starts a temporary local server (~7 s)",
                     "`churnflow schedule` starts a local server itself; for production set "
                     "PREFECT_API_URL to your server")
    from churnflow.flows.schedule import prefect_health

    url = url.rstrip("/")
    problem = prefect_health(url, timeout=5)
    if problem is not None:
        return Check("prefect", PROBLEM, f"{url}/health (from {source}) failed: {problem}",
                     "start the server (`prefect server start`) or fix/unset PREFECT_API_URL")
    return Check("prefect", OK, f"server at {url} is healthy (from {source})")


def run_checks(console: Console, config: Path | None) -> bool:
    """Run every check, print one row each (check / status / detail / what to do); True if all ok."""
    checks: list[Check] = []
    settings, first = _settings_check(config)
    checks.append(first)
    if settings is not None:
        checks += _data_checks(settings)
        checks += _mlflow_checks(settings)
        checks.append(_decay_check(settings))
    else:
        checks.append(Check("data, model", PROBLEM, "skipped: the settings do not load",
                            "fix the settings first"))
    checks.append(_prefect_check())

    table = Table(title="churnflow doctor", show_lines=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("what to do", overflow="fold")
    for c in checks:
        style = "green" if c.status == OK else "bold red"
        table.add_row(Text(c.name), Text(c.status, style=style), Text(c.detail), Text(c.todo))
    console.print(table)

    problems = [c for c in checks if c.status == PROBLEM]
    if not problems:
        console.print("[green]everything needed is in place.[/] [yellow]next:[/] churnflow score")
        return True
    console.print(f"[bold red]{len(problems)} problem(s).[/] What to do, in order:")
    for c in problems:
        console.print(f"  - {escape(c.name)}: {escape(c.todo)}", soft_wrap=True)
    return False
