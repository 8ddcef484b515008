"""Where a flow's per-customer work runs: ``[compute] engine = "local"`` (this process) or ``"dask"``.

On the Dask engine a flow runs its heavy task through prefect-dask's ``DaskTaskRunner``: on the
cluster at ``compute.scheduler_address``, or on a local cluster the runner starts and stops
with the flow run (``n_workers`` processes of ``threads_per_worker`` threads, ``memory_limit``
each). The task then drives the cluster through the runner's client (:func:`engine_client`):
only settings, the model and plain pandas results cross task boundaries, never a Dask
collection (a collection pickled into another task would be recomputed there, or point at a
client that is gone). Publishing stays in the flow's own process, where the output folder is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from churnflow.features.partitioned import WORKER_ENV, check_scheduler_reachable, worker_directory
from churnflow.features.settings import Settings
from churnflow.flows.logs import hide_expected_failures

if TYPE_CHECKING:
    from distributed import Client
    from prefect_dask import DaskTaskRunner

CONNECT_TIMEOUT = "30s"
"""How long a client waits for the scheduler: an unreachable cluster fails the run, never hangs it."""


def dask_task_runner(settings: Settings) -> DaskTaskRunner:
    """The task runner of ``[compute]``: the given scheduler, else a local cluster of its own."""
    from prefect_dask import DaskTaskRunner

    compute = settings.compute
    if compute.scheduler_address:
        check_scheduler_reachable(compute.scheduler_address)
        return DaskTaskRunner(address=compute.scheduler_address, client_kwargs={"timeout": CONNECT_TIMEOUT})
    directory = worker_directory(compute, settings)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": compute.n_workers, "threads_per_worker": compute.threads_per_worker,
                        "memory_limit": compute.memory_limit, "local_directory": directory,
                        "dashboard_address": ":0",  # a free port; the runner logs the link
                        "env": dict(WORKER_ENV)},  # as churnflow's own local clusters
        client_kwargs={"timeout": CONNECT_TIMEOUT},
    )


@contextmanager
def engine_client() -> Iterator[Client]:
    """Inside a task submitted to the ``DaskTaskRunner``: a client of the same cluster.

    The task's worker thread leaves the worker's thread pool while the task waits for the
    partitions (``secede``), so a cluster of single-thread workers still has every thread free
    for them; without it one worker would wait on itself. The worker's Prefect logs leave out
    the failures the CLI explains itself, as the flow's own process does (``flows.logs``): the
    worker prints to the same terminal.
    """
    from distributed import get_worker, rejoin, secede
    from prefect_dask import get_dask_client

    hide_expected_failures()
    with get_dask_client(timeout=CONNECT_TIMEOUT) as client:
        try:
            on_worker = get_worker() is not None
        except ValueError:  # called outside a worker (a direct task call, a test)
            on_worker = False
        if on_worker:
            secede()
        try:
            yield client
        finally:
            if on_worker:
                rejoin()
