"""Settings: TOML file, CHURNFLOW_* environment, explicit overrides, and the refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from churnflow.features.settings import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHURNFLOW_* variable from the caller's shell may leak into these tests."""
    for name in list(os.environ):
        if name.startswith("CHURNFLOW_"):
            monkeypatch.delenv(name)


def _write(folder: Path, text: str) -> Path:
    path = folder / "churnflow.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no churnflow.toml here: embedded defaults are used
    s = load_settings()
    assert s.churn.definition == "inactivity"
    assert s.training.n_trials == 30
    assert s.root == Path.cwd()


def test_toml_file_values_are_read(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path,
        """
[data]
events = "ev.csv"
[data.columns]
customer_id = "cust_no"
[churn]
horizon_days = 60
min_tenure_days = 14
[training]
n_trials = 7
[features]
windows_days = [90, 30, 30]
""",
    )
    s = load_settings(cfg)
    assert s.churn.horizon_days == 60
    assert s.churn.min_tenure_days == 14
    assert s.training.n_trials == 7
    assert s.data.columns.customer_id == "cust_no"
    # untouched keys keep their defaults
    assert s.training.seed == 42
    # windows are sorted and de-duplicated
    assert s.features.windows_days == [30, 90]


def test_env_var_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, "[training]\nn_trials = 7\nseed = 3\n")
    monkeypatch.setenv("CHURNFLOW_TRAINING__N_TRIALS", "11")
    s = load_settings(cfg)
    assert s.training.n_trials == 11
    assert s.training.seed == 3  # the file still provides the other keys of the section


def test_explicit_override_beats_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, "[training]\nn_trials = 7\nseed = 3\n")
    monkeypatch.setenv("CHURNFLOW_TRAINING__N_TRIALS", "11")
    s = load_settings(cfg, training={"n_trials": 5})
    assert s.training.n_trials == 5
    assert s.training.seed == 3


def test_none_override_is_ignored(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[training]\nn_trials = 7\n")
    s = load_settings(cfg, training=None)
    assert s.training.n_trials == 7


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[churn]\nhorizon = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    msg = str(info.value)
    assert "churn.horizon" in msg
    assert "unknown key" in msg
    assert str(cfg) in msg


def test_unknown_key_names_the_near_miss_in_its_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.columns\.cutomer_id: unknown key \(did you mean 'customer_id'\?"):
        load_settings(_write(tmp_path, '[data.columns]\ncutomer_id = "cust_no"\n'))
    with pytest.raises(ConfigError, match=r"churn\.zzz: unknown key \(check the spelling"):
        load_settings(_write(tmp_path, "[churn]\nzzz = 3\n"))


@pytest.mark.parametrize(("text", "fragment"), [
    ('[serving]\ncapacity = "lots"\n', "serving.capacity: Input should be a valid integer, unable to parse string as an integer (got 'lots')"),
    ("[serving]\ncapacity = -5\n", "serving.capacity: Input should be greater than or equal to 0 (got -5)"),
    ('[data.columns]\npii = "email"\n', 'data.columns.pii: must be a list, e.g. pii = ["email"]'),
    ('[features]\nwindows_days = [30, "x"]\n', "features.windows_days.1: Input should be a valid integer"),
])
def test_bad_value_is_shown_beside_its_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert fragment in str(info.value)


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[trainng]\nn_trials = 3\n")
    with pytest.raises(ConfigError, match=r"trainng.*unknown key"):
        load_settings(cfg)


def test_unknown_env_key_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, "")
    monkeypatch.setenv("CHURNFLOW_CHURN__HORIZON", "3")
    with pytest.raises(ConfigError, match=r"churn\.horizon.*unknown key"):
        load_settings(cfg)


def test_churnflow_variables_that_are_not_settings_are_left_alone(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNFLOW_THREADS", "1")  # set on churnflow's own Dask workers
    monkeypatch.setenv("CHURNFLOW_DEBUG", "1")  # set by --debug
    assert load_settings(_write(tmp_path, "")).training.n_trials > 0


def test_bad_enum_value_names_key_and_allowed_values(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[churn]\ndefinition = "inactive"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    msg = str(info.value)
    assert "churn.definition" in msg
    for allowed in ("inactivity", "explicit", "label"):
        assert allowed in msg


def test_playbook_rules_can_name_a_risk_tier(tmp_path: Path) -> None:
    rule = '[[serving.playbook]]\nsegment = "high value"\ntier = "{}"\naction = "call"\nchannel = "phone"\n'
    (read,) = load_settings(_write(tmp_path, rule.format("high"))).serving.playbook
    assert (read.segment, read.reason, read.tier, read.action) == ("high value", "*", "high", "call")
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, rule.format("urgent")))
    assert "serving.playbook" in str(info.value) and "medium" in str(info.value)


def test_bad_number_names_key(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[churn]\nhorizon_days = 0\n")
    with pytest.raises(ConfigError, match=r"churn\.horizon_days"):
        load_settings(cfg)


def test_explicit_definition_needs_churn_time(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[churn]\ndefinition = "explicit"\n')
    with pytest.raises(ConfigError, match=r"explicit.*churn_time"):
        load_settings(cfg)
    ok = _write(tmp_path, '[churn]\ndefinition = "explicit"\n[data.columns]\nchurn_time = "cancelled"\n')
    assert load_settings(ok).data.columns.churn_time == "cancelled"


def test_label_definition_needs_label_column(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[churn]\ndefinition = "label"\n')
    with pytest.raises(ConfigError, match=r"data\.columns\.label"):
        load_settings(cfg)


def test_required_column_cannot_be_blank(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[data.columns]\ncustomer_id = " "\n')
    with pytest.raises(ConfigError, match=r"data\.columns\.customer_id"):
        load_settings(cfg)


def test_relative_paths_resolve_against_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "project" / "conf"
    conf_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = _write(
        conf_dir,
        """
[data]
events = "../data/events.csv"
[tracking]
uri = "sqlite:///mlruns/mlflow.db"
[serving]
output_dir = "out"
""",
    )
    monkeypatch.chdir(elsewhere)
    s = load_settings(cfg)
    assert s.root == conf_dir.resolve()
    assert s.path(s.data.events).resolve() == (tmp_path / "project" / "data" / "events.csv").resolve()
    assert s.output_dir == conf_dir.resolve() / "out"
    assert s.tracking_uri == f"sqlite:///{conf_dir.resolve() / 'mlruns' / 'mlflow.db'}"
    # absolute paths and non-sqlite URLs pass through untouched
    assert s.path(str(tmp_path / "abs.csv")) == tmp_path / "abs.csv"
    assert s.url_or_path("postgresql://u@h/db") == "postgresql://u@h/db"
    assert s.url_or_path("sqlite:///:memory:") == "sqlite:///:memory:"


def test_same_result_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, '[data]\nevents = "e.parquet"\n')
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    first = load_settings(cfg).path("e.parquet")
    monkeypatch.chdir(b)
    second = load_settings(Path("..") / "churnflow.toml").path("e.parquet")
    assert first == second == tmp_path.resolve() / "e.parquet"


def test_default_config_in_cwd_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "[training]\nn_trials = 9\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().training.n_trials == 9


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found"):
        load_settings(missing)


def test_config_folder_or_utf16_file_is_a_config_error(tmp_path: Path) -> None:
    """A folder passed as --config was read as no file (the defaults validated instead); a
    settings file saved as UTF-16 (Notepad) got Python's codec message."""
    _write(tmp_path, "[training]\nn_trials = 3\n")
    with pytest.raises(ConfigError, match=r"is a folder, not a settings file.*--config .*churnflow\.toml"):
        load_settings(tmp_path)
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text("[training]\nn_trials = 3\n", encoding="utf-16")
    with pytest.raises(ConfigError, match=r"utf16\.toml: it is not UTF-8 text.*save it as UTF-8"):
        load_settings(utf16)


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "[churn\nhorizon_days = 3\n")
    with pytest.raises(ConfigError, match=str(cfg.name)):
        load_settings(cfg)


def test_settings_are_validated_on_assignment() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.churn.horizon_days = -1


# ---- values checked at loading, blamed on where they came from -----------------------------------


def test_bad_env_value_is_blamed_on_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path, "[training]\nn_trials = 7\n")
    monkeypatch.setenv("CHURNFLOW_TRAINING__N_TRIALS", "0")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    msg = str(info.value)
    assert "training.n_trials" in msg and "environment variable CHURNFLOW_TRAINING__N_TRIALS" in msg
    assert f"in {cfg}" not in msg  # the file is fine


def test_bad_option_value_is_blamed_on_the_option(tmp_path: Path) -> None:
    from churnflow.features.settings import OPTION_NAMES

    OPTION_NAMES[("training", "n_trials")] = "--trials"
    cfg = _write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"training\.n_trials: .*\(from option --trials\)"):
        load_settings(cfg, training={"n_trials": 0})


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ('[schedule]\ncron = "0 25 * * 1"\n', "schedule.cron", "is not a cron expression"),
    ('[schedule]\ncron = "every monday"\n', "schedule.cron", "five fields"),
    ('[data]\nend_date = "31/12/2024"\n', "data.end_date", "YYYY-MM-DD"),
    ('[data]\nencoding = "latin-9x"\n', "data.encoding", "unknown encoding"),
    ('[compute]\nmemory_limit = "2gigs"\n', "compute.memory_limit", '"2GiB", "4GB" or "auto"'),
    ('[compute]\nscheduler_address = "localhost:8786x"\n', "compute.scheduler_address", "tcp://host:8786"),
    ('[compute]\nmemory_limit = "50MB"\n', "compute.memory_limit", "at least 1GiB"),
])
def test_unusable_values_name_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert key in str(info.value) and fragment in str(info.value)


def test_code_defaults_require_no_demo_files(tmp_path: Path) -> None:
    """A config naming only a customers file with a churn flag needs nothing else."""
    cfg = _write(tmp_path, '[data]\ncustomers = "crm.csv"\n[data.columns]\nlabel = "Churn"\n'
                           '[churn]\ndefinition = "label"\n')
    s = load_settings(cfg)
    assert s.data.events == "" and s.data.contacts == ""
    s.check_sources()
    with pytest.raises(ConfigError, match="data.events"):
        load_settings(_write(tmp_path, '[data]\ncustomers = "crm.csv"\n')).check_sources()


@pytest.mark.parametrize("limit", ["2GiB", "4 GB", "1GiB", "auto", "0.5", "0", "2000000000"])
def test_memory_limits_dask_reads_are_kept(tmp_path: Path, limit: str) -> None:
    assert load_settings(_write(tmp_path, f'[compute]\nmemory_limit = "{limit}"\n')).compute.memory_limit == limit


def test_the_dask_engine_without_its_extra_says_what_to_install(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "prefect_dask" else real(name, *a))
    cfg = _write(tmp_path, '[compute]\nengine = "dask"\n')
    with pytest.raises(ConfigError, match=r'compute\.engine: .*prefect_dask not installed.*churnflow\[dask\]'):
        load_settings(cfg)
    assert load_settings(_write(tmp_path, '[compute]\nengine = "local"\n')).compute.engine == "local"
