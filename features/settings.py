"""One typed settings object for every churnflow command.

Read from one TOML file (default ``churnflow.toml`` in the working directory),
overridable by ``CHURNFLOW_<SECTION>__<KEY>`` environment variables and, above
those, by explicit overrides passed from the CLI or a flow parameter. Unknown keys
and bad values are refused with the key path and the allowed values, because a
silently ignored typo in a churn definition produces a plausible but wrong model.

Relative paths (data files, the MLflow store, outputs) are resolved against the
folder holding the config file, so a command gives the same result from any
working directory.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from churnflow.features.errors import ChurnflowError
from churnflow.features.io import resolve_sqlite_url

DEFAULT_CONFIG = Path("churnflow.toml")
_TOML_FILE: ContextVar[Path | None] = ContextVar("churnflow_toml_file", default=None)


class ConfigError(ChurnflowError, ValueError):
    """The settings file or an override is invalid; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnMap(_Section):
    """Canonical name = the user's column name. An empty string means "not present".

    Optional columns (amount, event_type, signup_time, campaign, ...) left at their default are
    used when the file has a column of that name and ignored when it has not; a name the user
    wrote (file or environment) must exist, or loading stops with the closest column names.
    """

    customer_id: str = "customer_id"
    event_time: str = "event_time"
    amount: str = "amount"
    event_type: str = ""
    signup_time: str = "signup_time"
    churn_time: str = ""
    label: str = ""
    contact_time: str = "contact_time"
    campaign: str = "campaign"
    outcome: str = ""
    pii: list[str] = Field(default_factory=lambda: ["email", "name", "phone"])
    """Columns holding personal data: never features. Names given here must exist in the customers
    table (the defaults are dropped when present, ignored when absent)."""

    def is_explicit(self, key: str) -> bool:
        """True when the user set ``key`` (in the file or environment), not the code default."""
        return key in self.model_fields_set

    @field_validator("customer_id", "event_time", "contact_time")
    @classmethod
    def _required(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("this column is required; give the name it has in your data")
        return v


class DataSettings(_Section):
    customers: str = ""
    """Customers file or database URL; empty: the distinct customer ids of the events."""
    customers_table: str = ""
    events: str = ""
    """Activity / transactions log; empty for a snapshot table with a churn flag."""
    events_table: str = ""
    contacts: str = ""
    contacts_table: str = ""
    end_date: str = ""
    """Declared end of the data (ISO date). Events after it are an error; defaults to the last event."""
    encoding: str = "utf-8"
    """Text encoding of CSV/TSV files (e.g. "latin-1", "cp1252", "utf-16")."""
    decimal: Literal[".", ","] = "."
    """Decimal mark of numbers in CSV/TSV files: "," for exports written 12,50 (European Excel)."""
    date_format: str = ""
    """strftime format of every text date column (e.g. "%d/%m/%Y %H:%M"); empty: detected per column,
    refusing a column whose format is ambiguous."""
    date_formats: dict[str, str] = Field(default_factory=dict)
    """Per-column formats, keyed by your column name; they win over ``date_format``."""
    dayfirst: bool | None = None
    """For d/m vs m/d dates the data cannot decide: true = 25/03/2024 style, false = 03/25/2024."""
    allow_negative_amounts: bool = False
    drop_invalid_rows: bool = False
    """Opt in to dropping rows that fail row-level rules; the dropped counts are reported."""
    columns: ColumnMap = Field(default_factory=ColumnMap)

    @field_validator("end_date")
    @classmethod
    def _iso_date(cls, v: str) -> str:
        from datetime import date

        if v.strip():
            try:
                date.fromisoformat(v.strip())
            except ValueError:
                raise ValueError(f"{v!r} is not a date; write it as YYYY-MM-DD, e.g. 2024-06-30") from None
        return v.strip()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}; use e.g. utf-8, latin-1, cp1252, utf-16") from None
        return v


class ChurnSettings(_Section):
    definition: Literal["inactivity", "explicit", "label"] = "inactivity"
    horizon_days: int = Field(90, gt=0)
    min_tenure_days: int = Field(0, ge=0)


class FeatureSettings(_Section):
    windows_days: list[int] = Field(default_factory=lambda: [30, 90, 365])
    max_category_levels: int = Field(50, ge=2)
    """Text attributes with more distinct values are identifiers or free text, not features."""
    exclude: list[str] = Field(default_factory=list)
    """Attribute columns never to use as features (e.g. a status updated after the fact)."""
    value_column: str = ""
    """Customers-table column with recurring revenue per month (e.g. a plan fee). Used for value at
    risk and value segments when there is no spend history in the events."""
    allow_personal: list[str] = Field(default_factory=list)
    """Columns that look like personal data (e-mails, phones, names) but may be features anyway:
    the explicit opt-in. Without it (or a ``data.columns.pii`` entry) such a column is left out of the
    run and a note says so."""

    @field_validator("windows_days")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v or any(w <= 0 for w in v):
            raise ValueError("give at least one positive window length in days")
        return sorted(set(v))


class TrainingSettings(_Section):
    step_days: int = Field(30, gt=0)
    n_train_snapshots: int = Field(6, ge=1)
    n_trials: int = Field(30, ge=1)
    timeout_seconds: float = Field(600, gt=0)
    seed: int = 42
    objective: Literal["pr_auc", "log_loss", "roc_auc"] = "pr_auc"
    study_name: str = ""
    """Empty: derived from the model name and the as-of date, so reruns resume the same study."""
    storage: str = "sqlite:///mlruns/optuna.db"
    pruning: bool = True
    calibration: Literal["auto", "identity", "sigmoid", "beta", "isotonic"] = "auto"
    """Strictly increasing probability map (never reorders the list); auto picks the one with the
    lowest cross-validated log loss on the calibration rows, or none (identity)."""
    max_boost_rounds: int = Field(500, ge=10)
    early_stopping_rounds: int = Field(30, ge=5)
    test_size: float = Field(0.2, gt=0, lt=0.5)
    """Share of rows held out for the test set when the data are a snapshot table."""
    promotion_margin: float = Field(0.0, ge=0)
    """The challenger must beat the champion's test metric by at least this much."""
    n_threads: int = Field(2, ge=1)


class TrackingSettings(_Section):
    uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    experiment: str = "churnflow"
    model_name: str = "churnflow"


class PlayRule(_Section):
    """One playbook line: the first rule whose segment, reason and tier match decides the action."""

    segment: str = "*"
    reason: str = "*"
    """A reason group from the feature dictionary (recency, frequency, monetary, ...) or *."""
    tier: Literal["*", "high", "medium", "low"] = "*"
    """The customer's risk tier (serving.tier_high / tier_medium) or *."""
    action: str
    channel: str


def _default_playbook() -> list[PlayRule]:
    """Behaviour segments first; then what the main reason says where the segment does not
    (price, contract, satisfaction: the groups of attributes named so, ``features.spec``); then
    the value thirds and "all customers" of a snapshot table (no activity history), where the
    risk tier decides: a call is worth it for the likeliest leavers, an offer by e-mail for the
    rest."""
    return [
        PlayRule(segment="low value", reason="*", action="no action", channel="none"),
        PlayRule(segment="champions", reason="*", action="personal call from account manager", channel="phone"),
        PlayRule(segment="loyal", reason="recency", action="loyalty reward", channel="email"),
        PlayRule(segment="loyal", reason="*", action="loyalty reward", channel="email"),
        PlayRule(segment="*", reason="service", action="service call", channel="phone"),
        PlayRule(segment="at risk", reason="*", action="win-back offer", channel="email"),
        PlayRule(segment="new", reason="*", action="onboarding check-in", channel="email"),
        PlayRule(segment="high value", tier="high", action="personal call from account manager", channel="phone"),
        PlayRule(reason="price", action="price review: offer a better-fitting plan", channel="email"),
        PlayRule(reason="contract", action="offer a longer contract at a better rate", channel="email"),
        PlayRule(reason="satisfaction", action="satisfaction check-in call", channel="phone"),
        PlayRule(segment="high value", action="loyalty reward", channel="email"),
        PlayRule(segment="mid value", tier="high", action="retention call", channel="phone"),
        PlayRule(segment="mid value", action="retention offer", channel="email"),
        PlayRule(segment="all customers", tier="high", action="retention call", channel="phone"),
        PlayRule(segment="all customers", tier="medium", action="retention offer", channel="email"),
        PlayRule(segment="all customers", action="check-in message", channel="email"),
        PlayRule(segment="*", reason="*", action="win-back offer", channel="email"),
    ]


class ServingSettings(_Section):
    output_dir: str = "outputs"
    capacity: int = Field(500, ge=0)
    """How many customers the team can contact this week (0 = no cap)."""
    min_probability: float = Field(0.0, ge=0, le=1)
    tier_high: float = Field(0.5, gt=0, lt=1)
    tier_medium: float = Field(0.2, gt=0, lt=1)
    cooldown_days: int = Field(30, ge=0)
    suppression: Literal["suppress", "flag"] = "suppress"
    include_contact_fields: bool = False
    contact_fields: list[str] = Field(default_factory=lambda: ["name", "email", "phone"])
    chunk_size: int = Field(250_000, ge=1)
    drift_warn_psi: float = Field(0.1, ge=0)
    drift_fail_psi: float = Field(0.25, ge=0)
    list_database_url: str = ""
    list_table: str = "priority_list"
    playbook: list[PlayRule] = Field(default_factory=_default_playbook)
    holdout_share: float = Field(0.1, ge=0, le=0.5)
    """Share of the would-be-contacted customers held back at random as a control group, so the
    campaign's effect can be measured once the horizon has passed (0 = no control group)."""
    decay_alarm_drop: float = Field(0.05, gt=0, lt=1)
    """Alarm when the realised ROC-AUC of recent lists is this much below the model's test ROC-AUC."""

    @model_validator(mode="after")
    def _ordered(self) -> ServingSettings:
        if self.tier_medium >= self.tier_high:
            raise ValueError("tier_medium must be below tier_high")
        if self.drift_warn_psi > self.drift_fail_psi:
            raise ValueError("drift_warn_psi must not exceed drift_fail_psi")
        return self


class ScheduleSettings(_Section):
    cron: str = "0 6 * * 1"
    timezone: str = "UTC"
    deployment_name: str = "weekly-score"
    work_pool: str = ""  # set: `churnflow schedule` registers the deployment on this Prefect work pool

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        # croniter is the parser Prefect vendors to validate deployment schedules: what passes here,
        # `churnflow schedule` can serve (and features/ must not import Prefect).
        from croniter import croniter

        if croniter.is_valid(v.strip()):
            return v.strip()
        raise ValueError(f"{v!r} is not a cron expression; use five fields: minute hour day-of-month month "
                         "day-of-week, e.g. \"0 6 * * 1\" (Mondays 06:00)")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin") from exc
        return v


DASK_PACKAGES = ("dask", "distributed", "prefect_dask")
"""What ``compute.engine = "dask"`` imports (``pip install churnflow[dask]``)."""
MIN_WORKER_MEMORY = 2**30
"""Bytes below which ``compute.memory_limit`` is refused."""


class ComputeSettings(_Section):
    """Where per-customer work runs: this process, or a Dask cluster (``pip install churnflow[dask]``).

    ``local`` is the default and needs nothing extra. ``dask`` connects to ``scheduler_address``
    (e.g. ``tcp://scheduler:8786``) when given, else starts a local cluster of ``n_workers``
    processes that churnflow stops again at the end of the run.
    """

    engine: Literal["local", "dask"] = "local"
    scheduler_address: str = ""
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "2GiB"
    """Per worker, in Dask's notation ("2GiB", "4GB") or "auto"."""
    local_directory: str = ""
    """Workers' spill folder; empty = Dask's default (a dask-scratch-space folder in the temp dir)."""
    n_partitions: int = Field(0, ge=0)
    """Customer partitions (each customer's rows stay together); 0 = as many as the largest source
    has input blocks (Parquet files or row groups, 64 MiB of CSV). Aim for 100k-1M customers each."""
    tuning_sample_rows: int = Field(200_000, ge=100)
    """Training rows Optuna tunes on (an exact, seeded sample stratified by as-of date and label,
    held by every worker); the final model is fitted on all rows (``training/distributed.py``)."""

    @field_validator("engine")
    @classmethod
    def _engine_installed(cls, v: str) -> str:
        """The Dask engine's packages are an extra: say so with the settings, not as an import
        error in the middle of a run."""
        from importlib.util import find_spec

        missing = [name for name in DASK_PACKAGES if find_spec(name) is None] if v == "dask" else []
        if missing:
            raise ValueError(f"engine \"dask\" needs the Dask extra ({', '.join(missing)} not installed): "
                             "pip install \"churnflow[dask]\", or set compute.engine = \"local\"")
        return v

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, v: str) -> str:
        """What Dask reads as a worker's memory (a size, bytes, a share of the machine's memory, or
        "auto"), checked here: a typo otherwise surfaces when the cluster starts, as Dask's error,
        and a limit below ``MIN_WORKER_MEMORY`` pauses every worker before it holds a partition
        (a worker pauses at 80 % of its limit, and churnflow's code alone takes a good part of
        1 GiB): the run would wait forever."""
        v = v.strip()
        try:
            from dask.utils import parse_bytes
        except ImportError:  # (without the dask extra, compute.engine says what to install)
            return v
        try:
            size = float(v) if v != "auto" else 0.0
        except ValueError:
            try:
                size = float(parse_bytes(v))
            except ValueError:
                raise ValueError(f"{v!r} is not a memory size; write it as Dask does, e.g. \"2GiB\", \"4GB\" "
                                 "or \"auto\"") from None
        if 1 < size < MIN_WORKER_MEMORY:  # (0: no limit; up to 1: a share of the machine's memory)
            raise ValueError(f"{v!r} is too little for a worker: give each at least 1GiB, or \"auto\" (in "
                             "benchmarks/bench_dask.py workers peaked at 0.8 GB with 62,500 customers per partition)")
        return v

    @field_validator("scheduler_address")
    @classmethod
    def _address(cls, v: str) -> str:
        """A scheduler address distributed can parse (``tcp://host:8786``, ``host:8786``)."""
        v = v.strip()
        if not v:
            return v
        try:
            from distributed.comm.addressing import parse_address, parse_host_port
        except ImportError:
            return v
        try:
            scheme, location = parse_address(v)
            if scheme in ("tcp", "tls"):
                parse_host_port(location, 8786)
        except ValueError:
            raise ValueError(f"{v!r} is not a scheduler address; write it as tcp://host:8786 (the address "
                             "`dask scheduler` prints)") from None
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHURNFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    data: DataSettings = Field(default_factory=DataSettings)
    churn: ChurnSettings = Field(default_factory=ChurnSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    root: Path = Field(default_factory=Path.cwd, exclude=True)
    """Folder that relative paths are resolved against (the config file's folder)."""

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        cols = self.data.columns
        if self.churn.definition == "label" and not cols.label:
            raise ValueError("churn.definition = 'label' needs data.columns.label (the churn flag column)")
        if self.churn.definition == "explicit" and not cols.churn_time:
            raise ValueError("churn.definition = 'explicit' needs data.columns.churn_time")
        self._no_personal_column_used()
        return self

    def _no_personal_column_used(self) -> None:
        """A column declared personal (``data.columns.pii``) and also given a role that feeds the
        model or the messages (a signup date, the value column) would be used after all."""
        cols, personal = self.data.columns, set(self.data.columns.pii)
        roles = {f"data.columns.{key}": getattr(cols, key) for key in type(cols).model_fields
                 if key not in ("customer_id", "pii")} | {"features.value_column": self.features.value_column}
        for key, name in roles.items():
            if name and name in personal:
                raise ValueError(f"data.columns.pii declares '{name}' personal data (never used), but {key} "
                                 f"uses it; remove it from one of the two")

    def check_sources(self) -> None:
        """Refuse settings that configure no usable data (checked when data are loaded, so the
        settings themselves load without any file, e.g. for `churnflow demo-data`)."""
        d = self.data
        if self.churn.definition != "label" and not d.events:
            raise ConfigError(
                f"churn.definition = '{self.churn.definition}' needs an activity log: set data.events "
                "(a file or database URL), or use churn.definition = 'label' with a churn flag column "
                "(data.columns.label) in data.customers")
        if not d.customers and not d.events:
            raise ConfigError("no data configured: set data.customers and/or data.events in your settings")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # ---- path helpers -------------------------------------------------------------
    def path(self, value: str) -> Path:
        """Resolve a file path from the settings against the config folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    def url_or_path(self, value: str) -> str:
        """Database URLs pass through (relative SQLite files resolved); file paths resolve."""
        if "://" not in value:
            return str(self.path(value))
        return resolve_sqlite_url(value, self.root)

    @property
    def tracking_uri(self) -> str:
        return self.url_or_path(self.tracking.uri)

    @property
    def artifact_location(self) -> str:
        return self.path(self.tracking.artifact_location).as_uri()

    @property
    def optuna_storage(self) -> str:
        return self.url_or_path(self.training.storage)

    @property
    def output_dir(self) -> Path:
        return self.path(self.serving.output_dir)

    @property
    def pii_columns(self) -> list[str]:
        return list(self.data.columns.pii)

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain data for logging: no PII values live here, only column names."""
        return self.model_dump(mode="json")


OPTION_NAMES: dict[tuple[str, str], str] = {}
"""(section, key) → the CLI option that set it, filled by the CLI so errors blame ``--trials``."""


def _origin(loc: tuple[Any, ...], overrides: dict[str, Any], file: str) -> str:
    """Where the bad value came from: a CLI option / override, a CHURNFLOW_* variable, or the file."""
    section, key = (str(loc[0]), str(loc[1])) if len(loc) > 1 else (str(loc[0]) if loc else "", "")
    if key and isinstance(overrides.get(section), dict) and key in overrides[section]:
        option = OPTION_NAMES.get((section, key))
        return f"option {option}" if option else "an override passed to the flow"
    env = {name.upper(): name for name in os.environ if name.upper().startswith("CHURNFLOW_")}
    for candidate in (f"CHURNFLOW_{section}__{key}".upper(), f"CHURNFLOW_{section}".upper()):
        if key and candidate in env:
            return f"environment variable {env[candidate]}"
    return file


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed beside the last part of ``loc`` (``("data", "columns", "cutomer_id")``:
    the keys of ``[data.columns]``)."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [k for k in model.model_fields if k != "root"]


def _message(err: Any, loc: tuple[Any, ...]) -> str:
    """One settings error in the user's terms: pydantic's words, the value given, the near miss."""
    import difflib

    msg, given = str(err["msg"]).removeprefix("Value error, "), err.get("input")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc), n=1) if loc else []
        hint = f"did you mean '{close[0]}'? " if close else "check the spelling; "
        return f"unknown key ({hint}see churnflow.toml for the allowed keys)"
    if err["type"] == "list_type" and isinstance(given, str):
        return f"must be a list, e.g. {loc[-1]} = [\"{given}\"] (got the text {given!r})"
    if isinstance(given, (str, int, float, bool)) and not isinstance(err.get("ctx", {}).get("error"), Exception):
        return f"{msg} (got {given!r})"
    return msg


def _format_validation_error(exc: ValidationError, source: str, overrides: dict[str, Any] | None = None) -> str:
    problems: list[str] = []
    origins: set[str] = set()
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)  # (none: a rule between keys, which its message names)
        msg = _message(err, loc)
        origin = _origin(loc, overrides or {}, source)
        origins.add(origin)
        problems.append((key, msg, origin))
    head = f"invalid settings in {source}:" if origins <= {source} else "invalid settings:"
    lines = [head]
    for key, msg, origin in problems:
        lines.append(f"  - {key + ': ' if key else ''}{msg}" + ("" if origin == source and head.endswith(f"{source}:") else f" (from {origin})"))
    return "\n".join(lines)


ENV_NOT_SETTINGS = {"CHURNFLOW_CONFIG", "CHURNFLOW_THREADS", "CHURNFLOW_DEBUG"}
"""``CHURNFLOW_*`` variables that are not settings: the config file's path, the threads of the
compiled passes (``features.compiled``, set on churnflow's Dask workers), ``--debug``."""


def _check_env_sections() -> None:
    """A ``CHURNFLOW_*`` variable whose section does not exist (``CHURNFLOW_TRAINNG__N_TRIALS``)
    would be ignored by pydantic-settings: refuse it with the sections there are."""
    import difflib

    sections = sorted(set(Settings.model_fields) - {"root"})
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("CHURNFLOW_") or upper in ENV_NOT_SETTINGS:
            continue
        section = upper.removeprefix("CHURNFLOW_").split("__", 1)[0].lower()
        if section not in sections:
            close = difflib.get_close_matches(section, sections, n=1)
            hint = f"did you mean CHURNFLOW_{close[0].upper()}__...? " if close else ""
            raise ConfigError(f"environment variable {name}: there is no settings section {section!r}; {hint}"
                              f"variables are CHURNFLOW_<SECTION>__<KEY> with a section among "
                              f"{', '.join(sections)} (or unset it)")


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings: explicit overrides > CHURNFLOW_* environment > TOML file > defaults.

    ``overrides`` are nested dicts by section, e.g. ``training={"n_trials": 5}``.
    A missing default config is fine (embedded defaults); a missing explicit one is not.
    """
    path = Path(config) if config else Path(os.environ.get("CHURNFLOW_CONFIG", DEFAULT_CONFIG))
    if config and not path.exists():
        raise ConfigError(f"config file {path} not found; pass an existing file with --config")
    if path.is_dir():  # (read as no file at all, the built-in defaults would be validated instead)
        inside = path / DEFAULT_CONFIG
        raise ConfigError(f"config {path} is a folder, not a settings file; pass the file itself with --config"
                          + (f", e.g. --config {inside}" if inside.is_file() else ""))
    toml_file = path if path.exists() else None
    root = path.resolve().parent if toml_file else Path.cwd()
    clean = {k: v for k, v in overrides.items() if v is not None}
    _check_env_sections()
    token = _TOML_FILE.set(toml_file)
    try:
        return Settings(root=root, **clean)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path) if toml_file else 'the built-in defaults', clean)) from None
    except SettingsError as exc:  # an environment value that is not valid JSON for a list/table key
        section = str(exc).split('field "', 1)[-1].split('"', 1)[0]
        names = sorted(n for n in os.environ if n.upper().startswith(f"CHURNFLOW_{section}".upper()))
        raise ConfigError(
            f"invalid environment variable {' or '.join(names) or 'CHURNFLOW_' + section.upper() + '__*'}: "
            "a list or table value must be JSON, e.g. CHURNFLOW_DATA__COLUMNS__PII='[\"full_name\", \"email\"]'"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read settings file {path}: it is not UTF-8 text (saved as UTF-16 or in an "
                          "older encoding?); save it as UTF-8") from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None
    finally:
        _TOML_FILE.reset(token)
