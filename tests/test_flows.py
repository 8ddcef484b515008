"""End-to-end flows under Prefect's test harness: real flow runs, real MLflow store and registry,
real Optuna storage, real files — on a small demo customer base."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnflow.features.settings import load_settings
from tests.conftest import REPO, write_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

LIST_COLUMNS = ["rank", "customer_id", "churn_probability", "risk_tier", "value_at_risk", "segment",
                "reason_1", "reason_2", "reason_3", "recommended_action", "status"]
FILES = ["scores.parquet", "priority_list.csv", "priority_list.parquet", "summary.json", "report.html"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from churnflow.flows.pipeline_flow import pipeline_flow

    root = tmp_path_factory.mktemp("project")
    # The extract runs a week past the first as-of date, as next Monday's data will.
    config = write_project(root, end_date="2026-11-07")
    result = pipeline_flow(config=str(config), as_of="2026-10-31")
    return {"root": root, "config": config, "result": result}


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def test_pipeline_produces_champion_and_valid_list(project: dict[str, Any]) -> None:
    from churnflow.training.registry import registry_client

    result = project["result"]
    settings = load_settings(project["config"])
    champion = registry_client(settings).get_model_version_by_alias(settings.tracking.model_name, "champion")
    assert str(champion.version) == result["train"]["version"]
    assert champion.tags["decision"] == "promoted"

    folder = Path(result["score"]["folder"])
    assert folder.name == result["score"]["as_of"] == "2026-10-31"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    listed = pd.read_parquet(folder / "priority_list.parquet")
    assert [c for c in listed.columns if c in LIST_COLUMNS] == LIST_COLUMNS
    contactable = listed[~listed["status"].isin(["suppressed", "holdout"])]
    assert len(contactable) == 45 and (listed["status"] == "holdout").sum() == 5  # capacity 50, 10 % held back
    assert contactable["rank"].tolist() == list(range(1, 46))
    assert listed["churn_probability"].between(0, 1).all()
    assert (listed["reason_1"].str.len() > 0).all()
    assert not listed["reason_1"].str.contains("_").any(), "reasons must be phrases, not feature names"
    csv = pd.read_csv(folder / "priority_list.csv", encoding="utf-8-sig")
    assert csv["customer_id"].tolist() == listed.loc[listed["status"] != "holdout", "customer_id"].tolist()
    scores = pd.read_parquet(folder / "scores.parquet")
    assert {"customer_id", "churn_probability", "risk_tier", "value_at_risk", "priority_score", "segment",
            "model_version", "as_of"} <= set(scores.columns)
    assert scores["customer_id"].is_unique and len(scores) > len(listed)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model_version"] == str(champion.version)
    assert summary["n_scored"] == len(scores)
    assert summary["top_reasons_listed"] and summary["drift_features"]
    assert summary["input_fingerprint"]["events_rows"] > 0
    report = (folder / "report.html").read_text()
    assert "no gains curve" not in report, "the model's gains (training metrics) must reach the report"


def test_no_personal_data_in_outputs_or_mlflow(project: dict[str, Any]) -> None:
    root: Path = project["root"]
    customers = pd.read_parquet(root / "data" / "customers.parquet")
    pii_values = {str(v) for col in ("name", "email", "phone", "address") for v in customers[col].dropna()}
    pii_values = {v for v in pii_values if len(v) >= 6}
    folder = Path(project["result"]["score"]["folder"])
    blobs = {f"outputs/{n}": b for n, b in _bytes(folder).items()}
    for path in (root / "mlruns").rglob("*"):
        if path.is_file() and path.suffix not in {".db", ".png", ".ubj"}:
            blobs[str(path.relative_to(root))] = path.read_bytes()
    # Params, tags and metric names live in the MLflow database: read them as text.
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as con:
        for table, cols in (("params", "key, value"), ("tags", "key, value"), ("metrics", "key"),
                            ("model_version_tags", "key, value"), ("runs", "name")):
            rows = con.execute(f"SELECT {cols} FROM {table}").fetchall()
            blobs[f"db:{table}"] = json.dumps(rows).encode()
    assert len(blobs) > 10
    for name, blob in blobs.items():
        text = blob.decode("utf-8", errors="ignore")
        leaked = [v for v in pii_values if v in text]
        assert not leaked, f"personal data {leaked[:3]} found in {name}"


def test_second_week_gives_new_list_with_diff(project: dict[str, Any]) -> None:
    from churnflow.flows.score_flow import score_flow

    first = Path(project["result"]["score"]["folder"])
    before = _bytes(first)
    # Retention campaigns in the demo run on a 30-day calendar, so a week shifts
    # days_since_contact past the refusal threshold: real drift, reported, published by force.
    result = score_flow(config=str(project["config"]), as_of="2026-11-07", force=True)
    second = Path(result["folder"])
    assert any("days_since_contact" in w for w in result["summary"]["warnings"])
    assert second.name == "2026-11-07" and second != first
    assert _bytes(first) == before, "an earlier date's outputs must never change"
    listed = pd.read_parquet(second / "priority_list.parquet")
    previous = pd.read_parquet(first / "priority_list.parquet")
    still = listed["customer_id"].isin(previous["customer_id"])
    worked = ~listed["status"].isin(["suppressed", "holdout", "holdout, earlier list"])
    assert (listed.loc[still & worked, "status"] == "still on").all()
    assert (listed.loc[~still & worked, "status"] == "new").all()
    held = previous.loc[previous["status"] == "holdout", "customer_id"]  # their horizon is open: not contacted
    assert (listed.loc[listed["customer_id"].isin(held), "status"] == "holdout, earlier list").all()
    summary = json.loads((second / "summary.json").read_text())
    dropped = set(previous["customer_id"]) - set(listed["customer_id"])
    assert summary["n_dropped"] == len(dropped)


def test_rerun_same_date_is_byte_identical(project: dict[str, Any]) -> None:
    from churnflow.flows.score_flow import score_flow

    folder = Path(project["result"]["score"]["folder"])
    before = _bytes(folder)
    score_flow(config=str(project["config"]), as_of=folder.name)
    assert _bytes(folder) == before


def test_dask_engine_publishes_the_local_engine_s_list(project: dict[str, Any], dask_session: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``[compute] engine = "dask"``: the score flow runs on the cluster (DaskTaskRunner) and
    publishes the same files as the local engine (the session's cluster, given by its address)."""
    from dask.utils import key_split
    from distributed import get_task_stream

    from churnflow.flows.score_flow import score_flow

    local = Path(project["result"]["score"]["folder"])
    monkeypatch.setenv("CHURNFLOW_COMPUTE__ENGINE", "dask")
    monkeypatch.setenv("CHURNFLOW_COMPUTE__SCHEDULER_ADDRESS", dask_session.scheduler.address)
    monkeypatch.setenv("CHURNFLOW_SERVING__OUTPUT_DIR", str(tmp_path / "outputs"))
    with get_task_stream(dask_session) as stream:
        result = score_flow(config=str(project["config"]), as_of=local.name)
    assert {"score_into", "validate_into"} <= {key_split(t["key"]) for t in stream.data}
    folder = Path(result["folder"])
    assert folder == tmp_path / "outputs" / local.name
    for name in ("scores.parquet", "priority_list.csv", "priority_list.parquet"):
        assert (folder / name).read_bytes() == (local / name).read_bytes(), name
    got, expected = (json.loads((f / "summary.json").read_text()) for f in (folder, local))
    assert got.pop("input_fingerprint")["events_rows"] == expected.pop("input_fingerprint")["events_rows"]
    assert got == expected


def test_failure_in_publish_leaves_previous_list_intact(project: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import churnflow.serving.publish as publish
    from churnflow.flows.score_flow import score_flow

    folder = Path(project["result"]["score"]["folder"])
    before = _bytes(folder)

    def broken(frame: Any, path: Path) -> None:
        path.write_bytes(b"half a file")
        raise OSError("disk full (injected)")

    monkeypatch.setattr(publish, "write_parquet", broken)
    state = score_flow(config=str(project["config"]), as_of=folder.name, return_state=True)
    assert state.is_failed() and "disk full" in state.message
    state = score_flow(config=str(project["config"]), as_of="2026-11-14", return_state=True)
    assert state.is_failed()
    assert _bytes(folder) == before
    root = folder.parent
    assert not (root / "2026-11-14").exists()
    assert [p.name for p in root.iterdir() if not p.name[:4].isdigit()] == []


def test_gates_fail_the_flow_with_the_reason(project: dict[str, Any], tmp_path: Path) -> None:
    from churnflow.flows.score_flow import score_flow

    root: Path = project["root"]
    drifty = root / "drift.toml"
    drifty.write_text(project["config"].read_text().replace(
        "[serving]", "[serving]\ndrift_warn_psi = 0.0\ndrift_fail_psi = 0.0"))
    # With no drift tolerated, this week's population (not the model's reference) is refused.
    before = sorted(p.name for p in (root / "outputs").iterdir()) if (root / "outputs").exists() else []
    state = score_flow(config=str(drifty), return_state=True)
    assert state.is_failed() and "churnflow score --force" in state.message
    assert sorted(p.name for p in (root / "outputs").iterdir()) == before  # nothing published
    # A year after the data end is not drift but a date the data cannot speak for: said as such.
    state = score_flow(config=str(drifty), as_of="2027-11-01", return_state=True)
    assert state.is_failed() and "--as-of 2027-11-01 is after the end of the data" in state.message
    assert not (root / "outputs" / "2027-11-01").exists()

    state = score_flow(config=str(project["config"]), model_version="999", return_state=True)
    assert state.is_failed() and "no version 999" in state.message and "versions that exist: 1" in state.message

    empty = tmp_path / "empty.toml"
    empty.write_text(project["config"].read_text().replace('customers = "data/', f'customers = "{root}/data/')
                     .replace('events = "data/', f'events = "{root}/data/')
                     .replace('contacts = "data/', f'contacts = "{root}/data/'))
    state = score_flow(config=str(empty), return_state=True)
    assert state.is_failed() and "churnflow train" in state.message

    broken = tmp_path / "data" / "events.csv"
    broken.parent.mkdir()
    pd.DataFrame({"customer_id": [1, 999999], "event_time": ["2026-01-01", "not a date"],
                  "amount": [1.0, 2.0], "event_type": ["purchase", "login"]}).to_csv(broken, index=False)
    bad = tmp_path / "bad.toml"
    bad.write_text(empty.read_text().replace(f'events = "{root}/data/events.parquet"', f'events = "{broken}"'))
    state = score_flow(config=str(bad), return_state=True)
    assert state.is_failed() and "events.csv" in state.message and "cannot be parsed" in state.message
    assert "unknown customer" in state.message  # every problem at once


def test_outcomes_command_judges_a_past_list_and_the_next_report_shows_it(project: dict[str, Any]) -> None:
    """Runs last of the project's tests: the past list's card enters every later report."""
    from typer.testing import CliRunner

    import churnflow.flows.cli as cli
    from churnflow.flows.score_flow import score_flow
    from churnflow.training.registry import registry_client

    config = project["config"]
    past = score_flow(config=str(config), as_of="2026-07-01", force=True)  # horizon closed by 2026-09-28
    assert not (Path(past["folder"]) / "outcome.json").exists()
    result = CliRunner().invoke(cli.app, ["outcomes", "--config", str(config)])
    assert result.exit_code == 0, result.output
    card = json.loads((Path(past["folder"]) / "outcome.json").read_text())
    assert card["as_of"] == "2026-07-01" and card["groups"]["holdout"] == 5
    assert "2026-07-01" in result.output and "report cards" in result.output
    settings = load_settings(config)
    client = registry_client(settings)
    version = client.get_model_version(settings.tracking.model_name, card["model_version"])
    history = client.get_metric_history(version.tags["outcomes_run_id"], "realised_brier")
    assert len(history) == 1 and history[0].model_id == version.model_id

    later = score_flow(config=str(config), as_of="2026-11-07", force=True)
    assert "Past lists: what happened" in (Path(later["folder"]) / "report.html").read_text()
    assert later["summary"]["decay_alarm"]["lists"] == ["2026-07-01"]


def test_demo_loop_publishes_a_past_list_works_it_and_judges_it(tmp_path: Path) -> None:
    from churnflow.features.demo import team_campaign
    from churnflow.flows.demo_loop import demo_flow

    config = write_project(tmp_path, end_date="2026-10-31")
    result = demo_flow(config=str(config), trials=2)
    assert [t["as_of"] for t in result["teams"]] == ["2026-07-05", "2026-07-12", "2026-07-19"]  # weekly
    for team in result["teams"]:  # every past list worked and judged, oldest first
        assert (tmp_path / "outputs" / team["as_of"] / "outcome.json").exists()
    past = result["teams"][-1]["as_of"]
    assert result["teams"][-1]["n_contacted"] <= 45  # capacity 50 less the control group (and cool-down)
    listed = pd.read_parquet(tmp_path / "outputs" / past / "priority_list.parquet")
    contacts = pd.read_parquet(tmp_path / "data" / "contacts.parquet")
    called = contacts.loc[contacts["campaign"] == team_campaign(pd.Timestamp(past)), "customer_id"]
    assert set(called) == set(listed.loc[listed["status"].isin(["new", "still on"]), "customer_id"])
    assert not called.isin(listed.loc[listed["status"] == "holdout", "customer_id"]).any()
    card_file = tmp_path / "outputs" / past / "outcome.json"
    card = json.loads(card_file.read_text())
    assert card["groups"]["contact"] == result["teams"][-1]["n_contacted"] and card["groups"]["holdout"] >= 1
    assert card["campaign"]["verdict"].startswith("Too small")  # 5 control customers: said in words
    assert "Past lists: what happened" in (Path(result["score"]["folder"]) / "report.html").read_text()

    from churnflow.flows.demo_loop import team_task
    from churnflow.flows.score_flow import score_flow

    written = card_file.read_bytes()
    assert team_task.fn(load_settings(config), pd.Timestamp(past))["already_worked"]  # a rerun calls nobody twice
    assert len(pd.read_parquet(tmp_path / "data" / "contacts.parquet")) == len(contacts)
    score_flow(config=str(config), as_of=past, force=True)  # the past list republished: its card stays
    assert card_file.read_bytes() == written


def test_cdnow_runs_through_the_pipeline(tmp_path: Path) -> None:
    from churnflow.flows.pipeline_flow import pipeline_flow

    text = (REPO / "configs" / "cdnow.toml").read_text()
    text = text.replace('"../data/cdnow/events.csv"', f'"{REPO / "data" / "cdnow" / "events.csv"}"')
    text = text.replace('"sqlite:///../mlruns/mlflow.db"', '"sqlite:///mlruns/mlflow.db"')
    text = text.replace('"../mlruns/artifacts"', '"mlruns/artifacts"').replace('"../outputs/cdnow"', '"outputs"')
    text = text.replace("n_trials = 10", "n_trials = 3")
    config = tmp_path / "cdnow.toml"
    text = text.replace('"sqlite:///../mlruns/optuna.db"', '"sqlite:///mlruns/optuna.db"')
    config.write_text(text)
    result = pipeline_flow(config=str(config))
    assert result["train"]["plan"]["out_of_time"]
    assert result["train"]["metrics"]["roc_auc"] > 0.7
    folder = Path(result["score"]["folder"])
    assert folder.name == "1998-07-01"
    listed = pd.read_parquet(folder / "priority_list.parquet")
    assert 0 < len(listed) <= 200
    assert (listed["reason_1"] != "").all()


def test_snapshot_table_trains_stratified_and_scores_without_label(tmp_path: Path) -> None:
    """definition = "label": a customers table with a yes/no churn flag, no events, no dates."""
    import numpy as np

    from churnflow.flows.score_flow import score_flow
    from churnflow.flows.train_flow import train_flow

    rng = np.random.default_rng(0)
    n = 1500
    tenure = rng.integers(0, 72, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n)
    monthly = rng.uniform(20, 110, n).round(2)
    risk = 1 / (1 + np.exp(-(-1 + 1.5 * (contract == "Month-to-month") - 0.04 * tenure)))
    table = pd.DataFrame({"customerID": [f"{i:04d}-X" for i in range(n)], "tenure": tenure, "Contract": contract,
                          "MonthlyCharges": monthly,
                          "TotalCharges": [" " if t == 0 else f"{t * m:,.2f}" for t, m in zip(tenure, monthly, strict=True)],
                          "Churn": np.where(rng.random(n) < risk, "Yes", "No")})
    table.to_csv(tmp_path / "telco.csv", index=False)
    table.drop(columns="Churn").to_csv(tmp_path / "telco_next_week.csv", index=False)
    toml = """
[data]
customers = "{file}"
events = ""
[data.columns]
customer_id = "customerID"
label = "Churn"
signup_time = ""
pii = []
[churn]
definition = "label"
[features]
value_column = "MonthlyCharges"
[training]
n_trials = 2
"""
    (tmp_path / "train.toml").write_text(toml.format(file="telco.csv"))
    (tmp_path / "score.toml").write_text(toml.format(file="telco_next_week.csv"))
    trained = train_flow(config=str(tmp_path / "train.toml"))
    assert trained["plan"]["out_of_time"] is False
    assert trained["promoted"] and trained["metrics"]["roc_auc"] > 0.6
    result = score_flow(config=str(tmp_path / "score.toml"))
    listed = pd.read_parquet(Path(result["folder"]) / "priority_list.parquet")
    assert len(listed) > 0 and (listed["reason_1"] != "").all()
    scores = pd.read_parquet(Path(result["folder"]) / "scores.parquet")
    assert len(scores) == n


def test_features_command_writes_table_dictionary_and_schema(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from churnflow.features.export import read_feature_schema
    from churnflow.flows.cli import app

    config = write_project(tmp_path, n_customers=800)
    out = tmp_path / "features_2026-06-01.parquet"
    result = CliRunner().invoke(app, ["features", "--config", str(config), "--as-of", "2026-06-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert (table["as_of"] == pd.Timestamp("2026-06-01")).all() and table["customer_id"].is_unique
    schema = read_feature_schema(out)
    assert list(table.columns[2:]) == schema.features
    assert "email" in schema.dropped and "notes_id" in schema.dropped  # PII and identifier, with reasons
    dictionary = json.loads(out.with_suffix(".dictionary.json").read_text())
    assert set(dictionary["features"]) == set(schema.features)
    assert dictionary["dropped_columns"]["email"].startswith("personal data")


def test_features_command_on_the_dask_engine_writes_the_same_files(tmp_path: Path, dask_session: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from churnflow.flows.cli import app

    config = write_project(tmp_path, n_customers=800)
    args = ["features", "--config", str(config), "--as-of", "2026-06-01", "--out"]
    local = tmp_path / "local" / "features.parquet"
    assert CliRunner().invoke(app, [*args, str(local)]).exit_code == 0
    monkeypatch.setenv("CHURNFLOW_COMPUTE__ENGINE", "dask")
    monkeypatch.setenv("CHURNFLOW_COMPUTE__SCHEDULER_ADDRESS", dask_session.scheduler.address)
    on_dask = tmp_path / "dask" / "features.parquet"
    result = CliRunner().invoke(app, [*args, str(on_dask)])
    assert result.exit_code == 0, result.output
    assert on_dask.read_bytes() == local.read_bytes()
    assert on_dask.with_suffix(".dictionary.json").read_bytes() == local.with_suffix(".dictionary.json").read_bytes()


def test_bad_input_on_the_dask_engine_ends_in_one_clear_message(tmp_path: Path) -> None:
    """``churnflow features`` on the engine's own local cluster (worker processes), as a user runs
    it: the refusal raised on a worker reaches the user whole (every problem, their file and
    lines), and neither process prints a traceback."""
    import os
    import subprocess
    import sys

    config = write_project(tmp_path, n_customers=300, extra_toml='\n[compute]\nengine = "dask"\nn_workers = 1\n')
    events = pd.read_parquet(tmp_path / "data" / "events.parquet")
    events.loc[[5, 40], "amount"] = -3.0
    events.to_csv(tmp_path / "data" / "events.csv", index=False)
    env = {**os.environ, "CHURNFLOW_DATA__EVENTS": "data/events.csv"}
    done = subprocess.run([sys.executable, "-m", "churnflow.flows.cli", "features", "--config", str(config)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    said = " ".join((done.stdout + done.stderr).split())  # the console wraps long lines
    assert done.returncode == 2, said
    assert "failed validation (1 problem(s))" in said and "events.csv: column 'amount' must not be negative" in said
    assert "line 7: -3.0, line 42: -3.0" in said
    assert "Traceback" not in said and "Finished in state Failed" not in said
