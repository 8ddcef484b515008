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


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One local Dask cluster for the whole session: two single-thread workers as threads of this
    process (real scheduler, real shuffles; no process start-up on a small shared machine), closed
    at the end whatever happened. Short comm timeouts: a broken cluster fails, it does not hang."""
    pytest.importorskip("distributed")
    import dask

    from churnflow.features.partitioned import dask_client
    from churnflow.features.settings import ComputeSettings

    compute = ComputeSettings(engine="dask", n_workers=2, threads_per_worker=1, memory_limit="1GiB",
                              local_directory=str(tmp_path_factory.mktemp("dask")))
    # Thread workers measure this whole process's memory (pytest's, grown by every earlier test):
    # with memory management on they pause at 80 % of the limit and the next compute waits forever.
    no_memory_management = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause", "terminate")}
    with dask.config.set({"distributed.comm.timeouts.connect": "10s", "distributed.comm.timeouts.tcp": "30s",
                          **no_memory_management}), \
            dask_client(compute, processes=False) as client:
        yield client


@pytest.fixture
def dask_session(dask_cluster: object) -> object:
    """The session's Dask client, checked before each test: a cluster left broken by an earlier
    failure (lost workers) fails this test at once instead of hanging it."""
    dask_cluster.wait_for_workers(2, timeout=120)  # type: ignore[attr-defined]
    return dask_cluster
