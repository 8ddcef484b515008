"""A real user's first run: the README's snapshot-table config, copied as written, validates and
trains on a customers file with a churn flag and nothing else (no demo paths, no signup column)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import churnflow.flows.cli as cli
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _readme_snapshot_config() -> str:
    text = (REPO / "README.md").read_text()
    after = text[text.index("<!-- snapshot-example"):]
    return re.search(r"```toml\n(.*?)```", after, re.S).group(1)


def _telco(n: int = 600, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n)
    risk = 0.45 - 0.004 * tenure + np.where(contract == "Month-to-month", 0.2, -0.1)
    return pd.DataFrame({"customerID": [f"{i:04d}-ABCD" for i in range(n)], "tenure": tenure,
                         "Contract": contract, "MonthlyCharges": rng.uniform(20, 110, n).round(2),
                         "Churn": np.where(rng.random(n) < risk.clip(0.02, 0.95), "Yes", "No")})


def test_readme_snapshot_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=300, color_system=None))
    for name in [n for n in os.environ if n.startswith("CHURNFLOW_")]:
        monkeypatch.delenv(name)
    _telco().to_csv(tmp_path / "telco.csv", index=False)
    config = tmp_path / "churnflow.toml"
    config.write_text(_readme_snapshot_config())

    result = CliRunner().invoke(cli.app, ["validate", "--config", str(config)])
    assert result.exit_code == 0, result.stdout
    result = CliRunner().invoke(cli.app, ["train", "--config", str(config), "--trials", "2", "--timeout", "60"])
    assert result.exit_code == 0, result.stdout
    assert (tmp_path / "mlruns" / "mlflow.db").exists()


def test_the_cli_leaves_mlflow_s_info_lines_out() -> None:
    """Every `churnflow train` printed MLflow's "INFO mlflow.pyfunc: Validating input example
    against model signature" among its own lines: the CLI sets MLflow's level before MLflow
    configures its loggers (a user's own MLFLOW_LOGGING_LEVEL wins)."""
    import subprocess
    import sys

    code = ("import logging, churnflow.flows.cli as cli; cli._quiet_env(); import mlflow; "
            "print(logging.getLevelName(logging.getLogger('mlflow').getEffectiveLevel()))")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "WARNING", done.stdout + done.stderr
