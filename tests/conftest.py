"""Shared fixtures: a small churnflow project on disk, and one Prefect test harness per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

REPO = Path(__file__).resolve().parents[1]

SMALL_PROJECT_TOML = """
[data]
customers = "data/customers.parquet"
events = "data/events.parquet"
contacts = "data/contacts.parquet"

[data.columns]
event_type = "event_type"
churn_time = "churn_time"
outcome = "outcome"
pii = ["name", "email", "phone", "address"]

[features]
value_column = "monthly_fee"

[training]
n_train_snapshots = 2
n_trials = 3
timeout_seconds = 60
max_boost_rounds = 200

[serving]
capacity = 50
cooldown_days = 30
"""


def write_project(root: Path, n_customers: int = 1500, seed: int = 7, extra_toml: str = "",
                  end_date: str = "2026-10-31") -> Path:
    """A project folder with demo data (none when ``n_customers`` is 0) and a churnflow.toml whose
    stores all live inside it."""
    from churnflow.features.demo import generate_demo_data, write_demo_data

    root.mkdir(parents=True, exist_ok=True)
    if n_customers:
        write_demo_data(generate_demo_data(n_customers, seed=seed, end_date=end_date), root / "data")
    config = root / "churnflow.toml"
    config.write_text(SMALL_PROJECT_TOML + extra_toml)
    return config


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for every flow test in the session (~16 s once)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
