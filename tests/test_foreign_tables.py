"""Snapshot tables as users export them (telco, bank, SaaS look-alikes from ``tests.foreign_tables``)
go through ``churnflow validate``, ``train`` and ``score`` with a four-line config, as a new user
would run them: every column typed the way an analyst would (``TotalCharges`` text with blanks is
a number with missing values), no index, id or surname ever a feature or written anywhere, each
flag style mapped to the right class, ids kept exactly as written, and a list at the end.

One project per shape, trained once for the module (few hundred rows, 2 trials).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import churnflow.flows.cli as cli
from churnflow.features.personal import personal_data_reason
from tests.conftest import REPO
from tests.foreign_tables import bank, saas, telco

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

CONFIGS = {
    "telco": ('customer_id = "customerID"\nlabel = "Churn"', 'value_column = "MonthlyCharges"'),
    "bank": ('customer_id = "CustomerId"\nlabel = "Exited"', ""),
    "saas": ('customer_id = "account_id"\nlabel = "churned"', 'value_column = "mrr"'),
}
MAKERS = {"telco": telco, "bank": bank, "saas": saas}


@dataclass
class Run:
    folder: Path
    table: pd.DataFrame
    outputs: dict[str, str]

    def artifact(self, name: str) -> Path:
        found = sorted((self.folder / "mlruns").rglob(f"reports/{name}"))
        assert found, f"no {name} among the MLflow artifacts"
        return found[0]

    def schema(self) -> dict:
        return json.loads(self.artifact("schema.json").read_text())

    def priority_list(self) -> pd.DataFrame:
        (path,) = (self.folder / "outputs").glob("*/priority_list.csv")
        return pd.read_csv(path, dtype={"customer_id": str})


def _churnflow(*args: str) -> tuple[int, str]:
    """churnflow's own output (stdout): Prefect's log handlers keep writing to the first
    invocation's closed stream, an artefact of running the CLI several times in one process."""
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """validate → features → train (2 trials) → score, once per shape; every output kept."""
    done = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", Console(width=400, color_system=None))
        for name in [n for n in os.environ if n.startswith("CHURNFLOW_")]:
            mp.delenv(name)
        for shape, (columns, features) in CONFIGS.items():
            folder = tmp_path_factory.mktemp(shape)
            table = MAKERS[shape](300, seed=1)
            table.to_csv(folder / f"{shape}.csv", index=False)
            config = folder / "churnflow.toml"
            config.write_text(f'[data]\ncustomers = "{shape}.csv"\n\n[data.columns]\n{columns}\n\n'
                              f'[churn]\ndefinition = "label"\n\n[features]\n{features}\n')
            outputs = {}
            for step, args in [("validate", []), ("features", ["--out", str(folder / "features.parquet")]),
                               ("train", ["--trials", "2", "--timeout", "60"]), ("score", [])]:
                code, out = _churnflow(step, "--config", str(config), *args)
                assert code == 0 and "Traceback" not in out, f"{shape} {step}:\n{out}"
                outputs[step] = out
            done[shape] = Run(folder, table, outputs)
    return done


def test_telco_text_totals_are_numbers_with_blanks_missing(runs: dict[str, Run]) -> None:
    run = runs["telco"]
    schema = run.schema()
    assert {"totalcharges", "seniorcitizen", "tenure", "monthlycharges"} <= set(schema["numeric_attributes"])
    assert set(schema["categorical_levels"]["multiplelines"]) == {"No", "No phone service", "Yes"}
    features = pd.read_parquet(run.folder / "features.parquet")
    blank = run.table.loc[run.table["TotalCharges"] == " ", "customerID"]
    assert len(blank) >= 2
    totals = features.set_index("customer_id")["totalcharges"]
    assert totals.loc[blank].isna().all()
    assert totals.drop(blank).notna().all()
    typed = run.table.set_index("customerID")["TotalCharges"].drop(blank).astype(float)
    assert (totals.drop(blank) - typed.reindex(totals.drop(blank).index)).abs().max() < 1e-6


def test_ids_indexes_and_surnames_are_never_features(runs: dict[str, Run]) -> None:
    bank_schema = runs["bank"].schema()
    assert "RowNumber" in bank_schema["dropped"]
    sources = set(bank_schema["attribute_sources"].values())
    assert not sources & {"RowNumber", "CustomerId", "Surname"}
    assert "Surname" in runs["bank"].outputs["validate"]  # the note that names the left-out column
    assert "columns not used as features: 'RowNumber' (identifier" in runs["bank"].outputs["train"]
    for shape, id_column in [("telco", "customerID"), ("saas", "account_id")]:
        assert id_column not in runs[shape].schema()["attribute_sources"].values()


def test_surnames_are_written_nowhere(runs: dict[str, Run]) -> None:
    run = runs["bank"]
    surnames = set(run.table["Surname"])
    written = [p for p in run.folder.rglob("*") if p.is_file() and p.suffix in {".json", ".csv", ".html", ".txt"}
               and p.name != "bank.csv"]
    assert any(p.name == "reference.json" for p in written)
    words = {p.name: set(re.findall(r"[A-Za-z]+", p.read_text(errors="ignore"))) for p in written}
    leaked = {name: found & surnames for name, found in words.items() if found & surnames}
    assert not leaked, f"surnames in {leaked}"


@pytest.mark.parametrize("shape", ["telco", "bank", "saas"])
def test_each_flag_style_maps_to_the_churn_class(runs: dict[str, Run], shape: str) -> None:
    """Yes/No, 0/1 and true/false: the test rows' churn rate is the table's share of churners."""
    run = runs[shape]
    flags = run.table.iloc[:, -1].astype(str).str.lower().isin({"yes", "1", "true"})
    evaluation = json.loads(run.artifact("evaluation.json").read_text())
    assert evaluation["churn_rate"] == pytest.approx(flags.mean(), abs=0.04)
    assert flags.mean() < 0.4  # so an inverted mapping could not pass


def test_lists_keep_ids_as_written_and_value_the_named_column(runs: dict[str, Run]) -> None:
    for shape, id_column in [("telco", "customerID"), ("bank", "CustomerId"), ("saas", "account_id")]:
        listed = runs[shape].priority_list()
        assert len(listed) > 0
        assert set(listed["customer_id"]) <= set(runs[shape].table[id_column].astype(str))
    assert listed["customer_id"].str.len().eq(6).all()  # saas ids keep their leading zeros
    saas_run = runs["saas"]
    mrr = saas_run.table.set_index("account_id")["mrr"]
    listed = saas_run.priority_list().set_index("customer_id")
    ratio = listed["value_at_risk"] / (listed["churn_probability"] * mrr.reindex(listed.index))
    assert ratio.std() < 0.05 * ratio.mean() and ratio.mean() > 0  # value at risk scales with MRR
    assert "segment" in listed and not listed["segment"].str.contains("recent|frequent|RFM", case=False).any()


def test_dates_as_text_are_not_taken_for_phone_numbers(runs: dict[str, Run]) -> None:
    """An unmapped ``signup_date`` is not a feature (a date of unknown recording time), but neither
    is it personal data: no note asks the user to declare it in ``data.columns.pii``."""
    assert "personal data" not in runs["saas"].outputs["validate"]
    reason = runs["saas"].schema()["dropped"]["signup_date"]
    assert reason.startswith("date attribute") and 'data.columns.signup_time = "signup_date"' in reason
    assert "'signup_date' (date attribute" in runs["saas"].outputs["train"]  # said after training


@pytest.mark.parametrize(("config", "make", "path"), [("telco.toml", telco, "data/telco/telco.csv"),
                                                     ("bank.toml", bank, "data/bank/bank_churn.csv")])
def test_example_configs_validate_their_shape(tmp_path: Path, config: str, make, path: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/telco.toml and configs/bank.toml work on such an export, as written."""
    monkeypatch.setattr(cli, "console", Console(width=400, color_system=None))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / config).write_text((REPO / "configs" / config).read_text())
    (tmp_path / path).parent.mkdir(parents=True)
    make(200, seed=2).to_csv(tmp_path / path, index=False)
    code, out = _churnflow("validate", "--config", str(tmp_path / "configs" / config))
    assert code == 0 and "data are valid" in out and "note:" not in out, out


def test_personal_data_screen_knows_surnames_and_dates() -> None:
    """A Surname column repeats (Smith, Lee) yet is personal; ISO dates are not phone numbers."""
    surnames = pd.Series(["Smith", "Lee", "Kay", "Chu", "Onio", "Hargrave"] * 50)
    assert personal_data_reason(surnames, "Surname")
    assert personal_data_reason(surnames, "last_name")
    assert not personal_data_reason(surnames, "Geography")
    days = pd.Series(pd.date_range("2023-01-01", periods=300).strftime("%Y-%m-%d"))
    assert not personal_data_reason(days, "signup_date")
    assert not personal_data_reason(pd.Series(pd.date_range("2023-01-01", periods=300).strftime("%d/%m/%Y 10:00")), "x")
    phones = pd.Series([f"+44 20 79{i:02d} {1000 + i}" for i in range(300)])
    assert personal_data_reason(phones, "contact")


def test_report_names_the_drivers_when_all_are_attributes(runs: dict[str, Run]) -> None:
    """On a snapshot table every driver is an attribute: the report counts the features instead,
    named as the list says them ("contract is …")."""
    (report,) = (runs["telco"].folder / "outputs").glob("*/report.html")
    section = re.search(r'<section id="reasons">(.*?)</section>', report.read_text(), re.S).group(1)
    assert "contract is …" in section or "tenure is …" in section, section


def test_flags_read_yes_or_no_and_columns_as_words(runs: dict[str, Run]) -> None:
    """0/1 columns (bank) and Yes/No columns (telco) read "is active member: no", never
    "IsActiveMember is 0"; the model's dictionary says so for every flag, listed or not."""
    bank = json.loads(runs["bank"].artifact("feature_dictionary.json").read_text())
    assert bank["isactivemember"]["phrase"] == "is active member: {isactivemember:yes/no}"
    assert bank["hascrcard"]["phrase"] == "has cr card: {hascrcard:yes/no}"
    assert bank["numofproducts"]["phrase"] == "num of products is {numofproducts:,g}"  # 1-4: a number
    telco = json.loads(runs["telco"].artifact("feature_dictionary.json").read_text())
    assert telco["paperlessbilling"]["phrase"] == "paperless billing: {paperlessbilling:yes/no}"
    assert telco["multiplelines"]["phrase"] == "multiple lines is {multiplelines}"  # a third level
    said = {shape: runs[shape].priority_list()[["reason_1", "reason_2", "reason_3"]].fillna("").to_numpy().ravel()
            for shape in ("bank", "telco")}
    flags = [r for r in said["bank"] if r.startswith("is active member")]
    assert flags and set(flags) <= {"is active member: yes", "is active member: no"}
    for reasons in said.values():
        assert not [r for r in reasons if re.search(r"[A-Z][a-z]+[A-Z]|_", r.split(" is ")[0])], reasons


@pytest.mark.parametrize("shape", ["telco", "bank", "saas"])
def test_customers_flagged_as_churned_are_not_listed(runs: dict[str, Run], shape: str) -> None:
    """Scoring the training export itself: those whose flag says they left are not scored."""
    run = runs[shape]
    flags = run.table.iloc[:, -1].astype(str).str.lower().isin({"yes", "1", "true"})
    gone = set(run.table.loc[flags, run.table.columns[0 if shape != "bank" else 1]].astype(str))
    assert gone and not gone & set(run.priority_list()["customer_id"])
    assert f"scored {int((~flags).sum()):,} customers" in run.outputs["score"]
