"""The ``churnflow`` command line: every step of the workflow, one command each.

Heavy libraries (pandas, xgboost, mlflow, prefect, shap) are imported inside the commands so
``churnflow --help`` answers at once. Every command ends with where its outputs are and the
next command to run; every failure says what to do next.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from churnflow.flows.logs import DEBUG_ENV, hide_expected_failures

app = typer.Typer(
    help="churnflow: find the customers about to leave, say why, and whom to call first.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
DEMO_CUSTOMERS = "data/demo/customers.parquet"


if TYPE_CHECKING:
    from churnflow.features.settings import Settings

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Settings file (default: ./churnflow.toml).")]


_DEBUG = {"on": False}


@app.callback()
def _entry(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and Prefect's logs of failures.")] = False,
) -> None:
    """Process-wide switches live here, at the program's entry, never in library code."""
    _DEBUG["on"] = debug
    if debug:  # the Dask engine's worker processes, started later, inherit it (flows/logs.py)
        os.environ[DEBUG_ENV] = "1"
    else:
        os.environ.pop(DEBUG_ENV, None)
    _quiet_env()


def _quiet_env() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # ("INFO mlflow.pyfunc: Validating input example ...")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # the Dask engine's cluster chatter
    os.environ.setdefault("MPLBACKEND", "Agg")  # plots are files; no display is needed or wanted
    # XGBoost's OpenMP threads spin-wait between parallel regions by default: on a shared or busy
    # machine the spinning threads take the cores the work needs (training several times slower).
    # Set before any command imports xgboost (the OpenMP runtime reads it when it loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _quiet_tuning() -> None:
    """Optuna logs every trial at INFO; churnflow's own one line per trial is enough. Set here,
    at the entry of the commands that tune (importing optuna costs ~0.5 s, so not for all)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _fail(message: str, hint: str = "", code: int = 2) -> typer.Exit:
    """Print a user-facing error verbatim (no Rich markup: ``[data.columns]`` must survive)."""
    console.print(Text("error: ", style="bold red") + Text(message))
    if hint:
        console.print(Text("next: ", style="yellow") + Text(hint))
    return typer.Exit(code=code)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a flow; expected failures end in one clear message and exit code 2, no traceback."""
    from pydantic import ValidationError

    from churnflow.features.errors import ChurnflowError

    hide_expected_failures()
    try:
        return fn(*args, **kwargs)
    except (ChurnflowError, ValidationError) as exc:
        if _DEBUG["on"]:
            raise
        raise _fail(str(exc)) from None
    except OSError as exc:
        from churnflow.flows.tasks import lasting_os_error

        if _DEBUG["on"] or not lasting_os_error(exc):
            raise
        raise _fail(f"cannot write or read {exc.filename or 'a file'}: {exc.strerror or exc}",
                    "check that the folder exists and that you may write to it (serving.output_dir, "
                    "tracking.uri, training.storage); results published earlier are unchanged") from None
    except Exception as exc:
        if _DEBUG["on"]:
            raise
        raise _fail(f"{type(exc).__name__}: {exc}",
                    "this is unexpected (a bug); rerun with --debug for the traceback and report it", code=1) from None


def _settings(config: Path | None, **overrides: Any) -> Settings:
    from churnflow.features.settings import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        raise _fail(str(exc), "fix the setting named above") from None


def _as_of(value: str | None) -> str | None:
    """Check --as-of at the command line, so a typo is blamed on the option."""
    if value in (None, ""):
        return None
    from datetime import date

    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; write it as YYYY-MM-DD, e.g. 2024-06-30",
                                 param_hint="'--as-of'") from None


AsOfOpt = Annotated[
    str | None,
    typer.Option("--as-of", callback=_as_of,
                 help="As-of date YYYY-MM-DD: only data before it is used (default: latest complete day)."),
]


def _training_options(config: Path | None, trials: int | None, timeout: float | None) -> Settings:
    """Load settings with the CLI's training options, so a bad value names --trials / --timeout."""
    from churnflow.features.settings import OPTION_NAMES

    OPTION_NAMES.update({("training", "n_trials"): "--trials", ("training", "timeout_seconds"): "--timeout"})
    chosen = {k: v for k, v in {"n_trials": trials, "timeout_seconds": timeout}.items() if v is not None}
    return _settings(config, training=chosen or None)


@app.command("demo-data")
def demo_data(
    config: ConfigOpt = None,
    customers: Annotated[int, typer.Option(help="Number of customers to generate (1k to 1M).")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 42,
    out: Annotated[Path | None, typer.Option(help="Folder to write to (default: the folder of data.customers).")] = None,
) -> None:
    """Generate a realistic demo customer base (customers, events, contacts) as Parquet files."""
    from churnflow.features.demo import generate_demo_data, write_demo_data

    settings = _settings(config)
    folder = out or settings.path(settings.data.customers or DEMO_CUSTOMERS).parent
    with console.status(f"generating {customers:,} customers (seed {seed})"):
        data = generate_demo_data(customers, seed=seed)
        paths = write_demo_data(data, folder)
    console.print(
        f"wrote {len(data.customers):,} customers, {len(data.events):,} events, "
        f"{len(data.contacts):,} contacts to " + escape(str(folder))
    )
    for name, path in paths.items():
        console.print(f"  {name}: {escape(str(path))}")
    console.print("[yellow]next:[/] churnflow validate")


@app.command()
def validate(config: ConfigOpt = None) -> None:
    """Load and validate the configured sources; print what was found or every problem."""
    from churnflow.features.contracts import load_tables

    settings = _settings(config)
    tables = _run(load_tables, settings)
    table = Table(title="validated sources")
    table.add_column("item")
    table.add_column("value", justify="right")
    for key, value in tables.fingerprint().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for name, count in tables.dropped_rows.items():
        table.add_row(f"dropped rows ({name})", f"{count:,}")
    console.print(table)
    _print_notes(tables.notes)
    console.print("[green]data are valid.[/] [yellow]next:[/] churnflow train")


def _print_notes(notes: list[str]) -> None:
    """What the data made churnflow decide without stopping (verbatim: keys keep their brackets)."""
    for note in notes:
        console.print(Text("note: ", style="bold yellow") + Text(note))


@app.command()
def features(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    out: Annotated[Path | None, typer.Option(help="Parquet file to write (default: outputs/features/...).")] = None,
) -> None:
    """Build one point-in-time feature table (plus its dictionary) as of a date."""
    from churnflow.flows.features_flow import build_features_flow

    _settings(config)
    result = _run(build_features_flow, str(config) if config else None, as_of, str(out) if out else "")
    console.print(f"wrote {int(result['rows']):,} customers as of {result['as_of']} to [bold]{result['features']}[/]")
    console.print(f"feature dictionary: {result['dictionary']}")
    console.print("[yellow]next:[/] churnflow train")


@app.command()
def train(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials in the study (overrides training.n_trials).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Tuning wall-clock limit in seconds.")] = None,
) -> None:
    """Tune, fit, calibrate, evaluate, explain and register a churn model (train as if today were --as-of)."""
    from churnflow.flows.train_flow import train_flow

    _quiet_tuning()

    _training_options(config, trials, timeout)
    result = _run(train_flow, str(config) if config else None, as_of, trials, timeout)
    from churnflow.flows.summaries import print_train_summary

    print_train_summary(console, result)


@app.command()
def score(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    model_version: Annotated[str | None, typer.Option(help="Registered model version (default: the champion).")] = None,
    force: Annotated[bool, typer.Option(help="Publish even when drift is above drift_fail_psi.")] = False,
) -> None:
    """Score every active customer and publish this week's retention-priority list."""
    from churnflow.flows.score_flow import score_flow

    _settings(config)
    result = _run(score_flow, str(config) if config else None, as_of, model_version, force)
    from churnflow.flows.summaries import print_score_summary

    print_score_summary(console, result)


@app.command()
def pipeline(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    trials: Annotated[int | None, typer.Option(help="Optuna trials (overrides training.n_trials).")] = None,
) -> None:
    """Train, then score: the whole weekly job in one flow run."""
    from churnflow.flows.pipeline_flow import pipeline_flow

    _quiet_tuning()
    from churnflow.flows.summaries import print_score_summary, print_train_summary

    _training_options(config, trials, None)
    result = _run(pipeline_flow, str(config) if config else None, as_of, trials)
    print_train_summary(console, result["train"])
    print_score_summary(console, result["score"])


@app.command()
def demo(
    config: ConfigOpt = None,
    customers: Annotated[int, typer.Option(help="Demo customers to generate.")] = 20_000,
    trials: Annotated[int, typer.Option(help="Optuna trials for the demo's tuning.")] = 15,
) -> None:
    """The whole loop on demo data: train, a past list worked by a simulated team and its report card, today's list."""
    settings = _settings(config)
    if not settings.data.customers:
        raise _fail(f"the demo runs on the demo data, but data.customers is {settings.data.customers!r}",
                    "run it from the repository folder (its churnflow.toml names data/demo/...), or use "
                    "`churnflow demo-data` and `churnflow pipeline` with your own settings")
    if not settings.path(settings.data.customers).exists():
        demo_data(config=config, customers=customers, seed=42, out=None)
    else:
        console.print(f"demo data already in {escape(str(settings.path(settings.data.customers).parent))} (kept)")
    _quiet_tuning()
    _training_options(config, trials, None)
    from churnflow.flows.demo_loop import demo_flow
    from churnflow.flows.summaries import (
        print_demo_loop,
        print_score_summary,
        print_train_summary,
        print_where_to_look,
    )

    result = _run(demo_flow, str(config) if config else None, trials)
    print_train_summary(console, result["train"])
    print_demo_loop(console, result["teams"], result["score"])
    print_score_summary(console, result["score"])
    print_where_to_look(console, settings)


@app.command()
def report(
    config: ConfigOpt = None,
    as_of: AsOfOpt = None,
    top: Annotated[int, typer.Option(help="How many customers of the list to show.")] = 15,
) -> None:
    """Show a published priority list (latest, or --as-of) in the terminal and where its files are."""
    from churnflow.flows.summaries import print_published

    settings = _settings(config)
    try:
        print_published(console, settings, as_of, top)
    except FileNotFoundError as exc:
        raise _fail(str(exc), "run `churnflow score` first") from None


@app.command()
def outcomes(config: ConfigOpt = None) -> None:
    """Report cards of the published lists whose horizon has passed: did the outreach work, is the model right?"""
    from churnflow.flows.outcomes_flow import outcomes_flow
    from churnflow.flows.summaries import print_outcomes

    _settings(config)
    print_outcomes(console, _run(outcomes_flow, str(config) if config else None))


@app.command()
def schedule(
    config: ConfigOpt = None,
    start_server: Annotated[
        bool, typer.Option(help="Start a local `prefect server start` when PREFECT_API_URL is not set.")
    ] = True,
) -> None:
    """Serve the weekly `score` deployment on the cron schedule from settings (runs until stopped)."""
    from churnflow.flows.schedule import serve_weekly

    settings = _settings(config)
    serve_weekly(settings, str(config.resolve()) if config else None, start_server=start_server, console=console)


@app.command()
def doctor(config: ConfigOpt = None) -> None:
    """Check settings, data sources, tracking store, registry champion and Prefect; say what to fix."""
    from churnflow.flows.doctor import run_checks

    ok = run_checks(console, config)
    raise typer.Exit(code=0 if ok else 1)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="churnflow")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
