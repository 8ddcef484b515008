"""Privacy end to end: a misspelt PII setting stops `churnflow train` before anything is trained;
once fixed, an undeclared e-mail column is left out (said, with the two ways to settle it) and no
personal value reaches MLflow (params, tags, metrics, artifacts) or any file the run writes.
Also: Prefect prints no traceback for it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import churnflow.flows.cli as cli
from tests.conftest import write_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _personal_values(customers: pd.DataFrame) -> set[str]:
    values = {str(v) for col in ("full_name", "contact_email", "phone", "address") for v in customers[col].dropna()}
    return {v for v in values if len(v) >= 6}


def _written_text(root: Path) -> dict[str, str]:
    """Every file the run wrote (MLflow artifacts, outputs) and MLflow's params, tags, metrics as text."""
    blobs = {str(p.relative_to(root)): p.read_bytes().decode("utf-8", errors="ignore")
             for p in root.rglob("*") if p.is_file() and p.suffix not in {".db", ".png", ".ubj"}
             and "data" not in p.relative_to(root).parts[:1]}
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as con:
        for table, cols in (("params", "key, value"), ("tags", "key, value"), ("metrics", "key"),
                            ("model_version_tags", "key, value"), ("runs", "name")):
            blobs[f"db:{table}"] = json.dumps(con.execute(f"SELECT {cols} FROM {table}").fetchall())
    return blobs


def _prefect_console_to_current_stderr() -> None:
    """An earlier test's CLI run left Prefect's console handlers writing to its closed stream
    ("--- Logging error ---" tracebacks): point them at this test's stderr."""
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.console.file = sys.stderr


def test_privacy_settings_are_checked_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "console", Console(width=400, color_system=None))
    _prefect_console_to_current_stderr()
    for name in [n for n in os.environ if n.startswith("CHURNFLOW_")]:
        monkeypatch.delenv(name)
    config = write_project(tmp_path, n_customers=700, seed=5)
    path = tmp_path / "data" / "customers.parquet"
    customers = pd.read_parquet(path).rename(columns={"name": "full_name", "email": "contact_email"})
    customers.to_parquet(path, index=False)
    toml = config.read_text().replace('pii = ["name", "email", "phone", "address"]',
                                      'pii = ["fullname", "phone", "address"]')
    config.write_text(toml + "[tracking]\nmodel_name = \"privacy\"\n")

    result = CliRunner().invoke(cli.app, ["train", "--config", str(config), "--trials", "2"])
    printed = result.output + capfd.readouterr().err
    assert result.exit_code == 2, printed
    assert "'fullname'" in printed and "data.columns.pii" in printed and "did you mean 'full_name'" in printed
    assert "Traceback" not in printed  # neither churnflow's nor Prefect's task logs

    config.write_text(config.read_text().replace('pii = ["fullname", "phone", "address"]',
                                                 'pii = ["full_name", "phone", "address"]'))
    # (from here on only churnflow's own output: Prefect's handlers still point at the first
    # invocation's closed stream, an artefact of running the CLI twice in one process)
    # The undeclared e-mail column does not stop the run: it is left out, loudly, and never used.
    result = CliRunner().invoke(cli.app, ["train", "--config", str(config), "--trials", "2"])
    printed = result.stdout
    assert result.exit_code == 0, printed
    assert "'contact_email' looks like personal data" in printed and "it is left out" in printed
    assert "data.columns.pii" in printed and "features.allow_personal" in printed and "Traceback" not in printed
    leaked = {name: [v for v in _personal_values(customers) if v in text]
              for name, text in _written_text(tmp_path).items()}
    leaked = {name: values[:3] for name, values in leaked.items() if values}
    assert len(_written_text(tmp_path)) > 10
    assert not leaked, f"personal data found: {leaked}"
    schema = next(tmp_path.joinpath("mlruns").rglob("schema.json")).read_text()
    assert "contact_email" not in schema  # left out before the schema was inferred: not even its name
