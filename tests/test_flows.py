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
    contactable = listed[listed["status"] != "suppressed"]
    assert len(contactable) == 50  # serving.capacity
    assert contactable["rank"].tolist() == list(range(1, 51))
    assert listed["churn_probability"].between(0, 1).all()
    assert (listed["reason_1"].str.len() > 0).all()
    assert not listed["reason_1"].str.contains("_").any(), "reasons must be phrases, not feature names"
    csv = pd.read_csv(folder / "priority_list.csv", encoding="utf-8-sig")
    assert csv["customer_id"].tolist() == listed["customer_id"].tolist()
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
    assert (listed.loc[still & (listed["status"] != "suppressed"), "status"] == "still on").all()
    assert (listed.loc[~still & (listed["status"] != "suppressed"), "status"] == "new").all()
    summary = json.loads((second / "summary.json").read_text())
    dropped = set(previous["customer_id"]) - set(listed["customer_id"])
    assert summary["n_dropped"] == len(dropped)


def test_rerun_same_date_is_byte_identical(project: dict[str, Any]) -> None:
    from churnflow.flows.score_flow import score_flow

    folder = Path(project["result"]["score"]["folder"])
    before = _bytes(folder)
    score_flow(config=str(project["config"]), as_of=folder.name)
    assert _bytes(folder) == before


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
    # One year after the data end every recency has drifted: publishing is refused.
    state = score_flow(config=str(drifty), as_of="2027-11-01", return_state=True)
    assert state.is_failed() and "churnflow score --force" in state.message
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
