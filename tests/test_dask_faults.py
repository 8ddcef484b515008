"""A Dask worker killed in the middle of the weekly scoring: a clear error and nothing published,
or Dask's re-run of the lost tasks; either way the next run publishes the local engine's folder.

The cluster here has real worker processes (a worker can only die as a process), each under a
nanny that starts a new one; a worker plugin kills its own process (SIGKILL, as the kernel's
out-of-memory killer does) when it starts scoring a partition, once per arming.
"""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("dask.distributed")

from distributed import WorkerPlugin

from churnflow.features.contracts import load_tables
from churnflow.features.partitioned import ComputeError, dask_client, read_partitioned
from churnflow.features.settings import ComputeSettings, Settings, load_settings
from churnflow.serving.partitioned import score_week_partitioned
from churnflow.serving.publish import publish_week, standard_writers
from churnflow.serving.weekly import WeeklyOutputs, score_week
from tests.conftest import write_project

WORKER_START_S = 180
"""A restarted worker imports churnflow before it arrives: a minute was not enough on a loaded
2-core machine (a fresh-clone run beside a benchmark)."""

pytestmark = [
    pytest.mark.timeout(480),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]


class KillOnce(WorkerPlugin):
    """SIGKILL the worker that starts the first ``task`` after arming (arming = the marker file
    exists; the worker that removes it is the one that dies)."""

    def __init__(self, marker: str, task: str = "score_into") -> None:
        self.marker, self.task = marker, task

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        from dask.utils import key_split

        if finish == "executing" and key_split(key) == self.task:
            try:
                os.remove(self.marker)
            except FileNotFoundError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


def publish(outputs: WeeklyOutputs, root: Path) -> Path:
    files = standard_writers(outputs.scores, outputs.priority_list, outputs.summary, outputs.report_html)
    try:
        return publish_week(root, outputs.as_of, files)
    finally:
        outputs.discard()  # the Dask engine's scores working folder (the flow does the same)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Any]:
    from tests.test_dask_parity import train_small_model

    settings = load_settings(write_project(tmp_path_factory.mktemp("project"), n_customers=600, seed=11))
    return settings, train_small_model(settings)


def test_a_worker_killed_mid_run_fails_cleanly_or_is_rerun_and_the_next_run_publishes_the_same_folder(
        model: tuple[Settings, Any], tmp_path: Path) -> None:
    settings, bundle = model
    marker = tmp_path / "kill-armed"
    outputs_root = tmp_path / "outputs"
    compute = ComputeSettings(engine="dask", n_workers=2, threads_per_worker=1, memory_limit="1GiB",
                              local_directory=str(tmp_path / "dask"))
    with dask_client(compute, processes=True) as client:
        client.register_plugin(KillOnce(str(marker)))
        client.wait_for_workers(2, timeout=WORKER_START_S)
        started_with = client.run(lambda: os.environ.get("ARROW_DEFAULT_MEMORY_POOL"))
        assert set(started_with.values()) == {"system"}  # Arrow hands freed memory back
        threads = client.run(lambda: __import__("churnflow.features.compiled").features.compiled.THREADS)
        assert set(threads.values()) == {1}  # a task per worker thread already: no threads of its own

        # 1. No second chance (allowed-failures 0): the run stops with what to do, nothing is published.
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
        marker.touch()
        with pytest.raises(ComputeError, match="died.*Nothing was published.*compute.memory_limit"):
            publish(score_week_partitioned(read_partitioned(settings, 4), None, bundle, "1", settings), outputs_root)
        assert not marker.exists()  # a worker did die
        assert not outputs_root.exists() or not any(outputs_root.iterdir())

        # 2. Dask's default: the lost worker's tasks run again elsewhere, and the run completes.
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 3))
        client.wait_for_workers(2, timeout=WORKER_START_S)  # the nanny has started a new worker
        marker.touch()
        folder = publish(score_week_partitioned(read_partitioned(settings, 4), None, bundle, "1", settings),
                         outputs_root)
        assert not marker.exists()
        published = {p.name: p.read_bytes() for p in folder.iterdir()}

        # 3. A worker killed while writing its piece of scores.parquet (its scores are lost with it):
        # with no second chance the run stops, the published folder is untouched and no piece is left;
        # with Dask's default the piece is written again and the rerun publishes the same bytes.
        pieces = tmp_path / "kill-piece-armed"
        client.register_plugin(KillOnce(str(pieces), "write_scores_piece"))
        for allowed in (0, 3):
            client.wait_for_workers(2, timeout=WORKER_START_S)
            client.run_on_scheduler(lambda dask_scheduler, n=allowed: setattr(dask_scheduler, "allowed_failures", n))
            pieces.touch()
            run = partial(score_week_partitioned, read_partitioned(settings, 4), None, bundle, "1", settings)
            if allowed:
                assert publish(run(), outputs_root) == folder
            else:
                with pytest.raises(ComputeError, match="died.*Nothing was published"):
                    publish(run(), outputs_root)
            assert not pieces.exists()  # a worker did die
            assert sorted(p.name for p in outputs_root.iterdir()) == [folder.name]  # no working folder left
            assert {p.name: p.read_bytes() for p in folder.iterdir()} == published

    expected = publish(score_week(load_tables(settings, require_label=False), None, bundle, "1", settings),
                       tmp_path / "local")
    assert folder.name == expected.name
    assert sorted(p.name for p in outputs_root.iterdir()) == [folder.name]  # no hidden half folder left
    for name in ("scores.parquet", "priority_list.csv", "priority_list.parquet"):
        assert (folder / name).read_bytes() == (expected / name).read_bytes(), name
    assert pd.read_parquet(folder / "scores.parquet")["customer_id"].is_unique
