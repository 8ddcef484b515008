"""`churnflow doctor`: names what is missing and the command that fixes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import churnflow.flows.cli as cli
from tests.conftest import write_project


@pytest.fixture
def doctor(monkeypatch: pytest.MonkeyPatch):
    """Run `churnflow doctor --config ...` in-process; a wide console so no message is wrapped."""
    monkeypatch.setattr(cli, "console", Console(width=250, color_system=None))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    for name in [n for n in os.environ if n.startswith("CHURNFLOW_")]:
        monkeypatch.delenv(name)

    def run(config: Path):
        result = CliRunner().invoke(cli.app, ["doctor", "--config", str(config)])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, " ".join(result.output.split())

    return run


def test_doctor_names_missing_data_then_missing_model(tmp_path: Path, doctor) -> None:
    config = write_project(tmp_path, n_customers=0)

    code, out = doctor(config)
    assert code == 1, out
    assert str(tmp_path / "data" / "customers.parquet") in out
    assert "does not exist" in out
    assert "data.customers" in out  # the settings key to fix

    write_project(tmp_path, n_customers=1000, seed=3)
    code, out = doctor(config)
    assert code == 1, out  # no champion is a problem
    assert "does not exist" not in out
    assert "1,000 customers" in out
    assert "alias 'champion'" in out
    assert "run `churnflow train`" in out


def test_doctor_reports_bad_settings(tmp_path: Path, doctor) -> None:
    config = tmp_path / "churnflow.toml"
    config.write_text('[training]\nn_trails = 5\n')
    code, out = doctor(config)
    assert code == 1, out
    assert "training.n_trails" in out
    assert "unknown key" in out


def test_doctor_reports_unreachable_prefect(tmp_path: Path, doctor, monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    config = tmp_path / "churnflow.toml"
    config.write_text('[training]\nn_trials = 5\n')  # data missing as well: still one row each
    code, out = doctor(config)
    assert code == 1, out
    assert f"http://127.0.0.1:{port}/api/health" in out
    assert "prefect server start" in out


def test_doctor_reports_invalid_cron(tmp_path: Path, doctor) -> None:
    config = tmp_path / "churnflow.toml"
    config.write_text('[schedule]\ncron = "0 6 * * mon-ish"\n')
    code, out = doctor(config)
    assert code == 1, out
    assert "schedule.cron" in out and "is not a cron expression" in out


def test_doctor_names_settings_that_match_no_column(tmp_path: Path, doctor) -> None:
    config = write_project(tmp_path, n_customers=300, seed=3)
    config.write_text(config.read_text().replace('pii = ["name", "email", "phone", "address"]',
                                                 'pii = ["name", "e_mail", "phone", "address"]'))
    code, out = doctor(config)
    assert code == 1, out
    assert "'e_mail' is missing (data.columns.pii names it); did you mean 'email'?" in out


def test_doctor_says_when_the_models_realised_quality_has_decayed(tmp_path: Path, doctor) -> None:
    from churnflow.serving.outcomes import write_outcome_once

    config = write_project(tmp_path, n_customers=0)
    code, out = doctor(config)
    assert "No list with a closed horizon yet" in out and "model decay:" not in out
    for day, auc in (("2026-05-04", 0.80), ("2026-05-11", 0.70), ("2026-05-18", 0.71)):
        folder = tmp_path / "outputs" / day
        folder.mkdir(parents=True)
        write_outcome_once(folder, {"as_of": day, "horizon_closed": True, "horizon_end": "2026-08-17",
                                    "model_version": "2", "model_test_roc_auc": 0.85,
                                    "model_quality": {"roc_auc": auc}})
    code, out = doctor(config)
    assert code == 1 and "Model decay: realised ROC-AUC of the last 3 closed list(s) is 0.737" in out
    assert "- model decay: retrain: `churnflow train`" in out
