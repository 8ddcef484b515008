"""Bad-input corpus: each folder of ``tests/corpus`` is one kind of mistake a new user makes with
their own files (``cust_no``, ``event_at``, ``order_value``), run through ``churnflow validate``.

Every case must end with exit code 2 (or the code in its ``exit.txt``: 0 for input churnflow
accepts but must say something about, e.g. a column left out as personal data), a message holding
each fragment of its ``expect.txt`` (the user's own file, column and settings names, the fix), and
no traceback. An ``env.txt`` (NAME=value lines) sets environment variables for the case; an
``absent.txt`` lists fragments the output must not hold (a customer's name or e-mail address).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import churnflow.flows.cli as cli

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expect.txt").exists())


@pytest.fixture
def churnflow(monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in-process with a wide console (no wrapped messages) and a clean environment."""
    monkeypatch.setattr(cli, "console", Console(width=400, color_system=None))
    for name in [n for n in os.environ if n.startswith("CHURNFLOW_")]:
        monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli.app, list(args))
        return result.exit_code, result.output

    return run


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_message(case: str, churnflow, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env = CORPUS / case / "env.txt"
    for line in env.read_text().splitlines() if env.exists() else []:
        monkeypatch.setenv(*line.split("=", 1))
    folder = tmp_path / case  # a copy: no case may create files in the repository (e.g. a SQLite db)
    folder.mkdir()
    for f in (CORPUS / case).iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    code, out = churnflow("validate", "--config", str(folder / "churnflow.toml"))
    expected = [line for line in (folder / "expect.txt").read_text().splitlines() if line.strip()]
    exit_file = folder / "exit.txt"
    assert code == (int(exit_file.read_text()) if exit_file.exists() else 2), out
    assert "Traceback" not in out
    missing = [fragment for fragment in expected if fragment not in out]
    assert not missing, f"{missing} not in:\n{out}"
    absent = folder / "absent.txt"
    leaked = [line for line in (absent.read_text().splitlines() if absent.exists() else []) if line.strip() and line in out]
    assert not leaked, f"{leaked} must not be shown:\n{out}"
    assert "0 row(s)" not in out and "canonical" not in out
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (CORPUS / case).iterdir()), \
        "validating must not create files (e.g. an empty SQLite database)"


def test_the_fixed_corpus_case_validates(churnflow, tmp_path: Path) -> None:
    """The fix a message names works: the mixed-date file with data.dayfirst set."""
    case = CORPUS / "dates_iso_mixed_with_day_first"
    for f in case.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = tmp_path / "churnflow.toml"
    config.write_text(config.read_text().replace("[data]\n", "[data]\ndayfirst = true\n"))
    code, out = churnflow("validate", "--config", str(config))
    assert code == 0, out
    assert "data are valid" in out


def test_excel_style_exports_are_read(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark, padded header names, semicolons, currency and thousands separators."""
    from churnflow.features.contracts import load_tables
    from churnflow.features.settings import load_settings

    (tmp_path / "customers.csv").write_bytes("\ufeffcust_no ; plan\n0007;basic\n0008;pro\n".encode())
    (tmp_path / "events.csv").write_text('cust_no,event_at,order_value\n0007,2024-04-01,"$1,200.50"\n'
                                         "0008,2024-04-02,€ 30\n")
    config = tmp_path / "churnflow.toml"
    config.write_text('[data]\ncustomers = "customers.csv"\nevents = "events.csv"\n[data.columns]\n'
                      'customer_id = "cust_no"\nevent_time = "event_at"\namount = "order_value"\n')
    tables = load_tables(load_settings(config))
    assert tables.customers["customer_id"].tolist() == ["0007", "0008"]
    assert tables.customers["plan"].str.strip().tolist() == ["basic", "pro"]
    assert tables.events["amount"].tolist() == [1200.5, 30.0]


def test_ids_keep_their_leading_zeros(tmp_path: Path) -> None:
    from churnflow.features.contracts import load_tables
    from churnflow.features.settings import load_settings

    case = CORPUS / "pii_misspelt"
    for f in case.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = tmp_path / "churnflow.toml"
    config.write_text(config.read_text().replace('"fullname"', '"full_name"'))
    tables = load_tables(load_settings(config))
    assert tables.customers["customer_id"].tolist() == ["0007", "0008", "0009"]
    assert set(tables.events["customer_id"]) == {"0007", "0008", "0009"}


@pytest.mark.parametrize(("args", "fragment"), [
    (["train", "--trials", "0"], "--trials"),
    (["train", "--timeout", "-5"], "--timeout"),
    (["features", "--as-of", "2024-13-01"], "--as-of"),
    (["score", "--as-of", "yesterday"], "--as-of"),
])
def test_bad_option_is_blamed_on_the_option(args: list[str], fragment: str, churnflow, tmp_path: Path) -> None:
    config = tmp_path / "churnflow.toml"
    config.write_text("[training]\nn_trials = 5\n")
    code, out = churnflow(*args, "--config", str(config))
    assert code == 2, out
    assert fragment in out and "Traceback" not in out
    assert f"in {config}" not in out  # the file is not to blame


def test_bad_env_value_is_blamed_on_the_variable(churnflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "churnflow.toml"
    config.write_text("[serving]\ncapacity = 10\n")
    monkeypatch.setenv("CHURNFLOW_SERVING__CAPACITY", "-3")
    code, out = churnflow("validate", "--config", str(config))
    assert code == 2 and "serving.capacity" in out and "CHURNFLOW_SERVING__CAPACITY" in out, out


def test_messages_keep_bracketed_words(churnflow, tmp_path: Path) -> None:
    config = tmp_path / "churnflow.toml"
    config.write_text('[data]\nevents = "e.csv"\n[data.columns]\ncustomer_id = "[id]"\n')
    (tmp_path / "e.csv").write_text("cust,event_time\n1,2024-01-01\n")
    code, out = churnflow("validate", "--config", str(config))
    assert code == 2 and "'[id]'" in out, out


def test_read_retries_only_transient_errors() -> None:
    """A wrong encoding or a missing file fails the same way again: no retry; an I/O hiccup may pass."""
    from types import SimpleNamespace

    from churnflow.features.sources import SourceError
    from churnflow.flows.tasks import transient_only

    def retried(exc: BaseException) -> bool:
        return transient_only(None, None, SimpleNamespace(data=exc))

    assert not retried(SourceError("events: events.csv is not utf-8 text"))
    assert not retried(UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid"))
    assert retried(TimeoutError("slow network share"))


def test_debug_flag_shows_the_traceback(churnflow, tmp_path: Path) -> None:
    from churnflow.features.contracts import DataValidationError

    for f in (CORPUS / "pii_misspelt").iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    result = CliRunner().invoke(cli.app, ["--debug", "validate", "--config", str(tmp_path / "churnflow.toml")])
    assert isinstance(result.exception, DataValidationError)  # raised, so Python prints its traceback


def test_an_unwritable_output_folder_is_the_users_to_fix(churnflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A file where the outputs folder should be (as a read-only or full disk): one clear message,
    exit 2, not retried, nothing changed; not "a bug"."""
    import errno
    from types import SimpleNamespace

    import pandas as pd

    from churnflow.flows.tasks import transient_only
    from churnflow.serving.publish import publish_week

    monkeypatch.setitem(cli._DEBUG, "on", False)  # (an earlier --debug test leaves it on)
    blocker = tmp_path / "outputs"
    blocker.write_text("not a folder")
    files = {"priority_list.csv": lambda path: path.write_text("customer_id\n7\n")}
    with pytest.raises(typer.Exit) as info:
        cli._run(publish_week, blocker, pd.Timestamp("2026-11-02"), files)
    out = capsys.readouterr().out
    assert info.value.exit_code == 2 and f"cannot write or read {blocker}" in out and "serving.output_dir" in out
    assert "a bug" not in out and blocker.read_text() == "not a folder"
    assert not transient_only(None, None, SimpleNamespace(data=PermissionError(errno.EACCES, "Permission denied")))
    assert not transient_only(None, None, SimpleNamespace(data=OSError(errno.ENOSPC, "No space left on device")))


def test_entry_point_keeps_openmp_threads_from_spinning(churnflow, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Set at the program's entry (before xgboost loads), unless the user chose a policy."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for f in (CORPUS / "pii_misspelt").iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    churnflow("validate", "--config", str(tmp_path / "churnflow.toml"))
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    churnflow("validate", "--config", str(tmp_path / "churnflow.toml"))
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_features_before_the_data_start_write_nothing(churnflow, tmp_path: Path) -> None:
    """An as-of before every customer: an error naming the date, no empty feature table written."""
    for f in (CORPUS / "surname_column_first_run").iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "features.parquet"
    code, text = churnflow("features", "--as-of", "2020-01-01", "--out", str(out), "--config",
                           str(tmp_path / "churnflow.toml"))
    assert code == 2 and "no customers at 2020-01-01" in text and "--as-of" in text, text
    assert not out.exists() and not list(tmp_path.glob("*.json"))
