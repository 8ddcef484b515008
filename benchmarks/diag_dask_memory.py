"""Diagnostic: where the Dask engine's worker memory peaks (not a benchmark of record).

Uses ``bench_dask.py``'s data and settings (2 single-thread workers × 2 GiB, 62,500 customers
per partition). Two modes:

- ``passes``: weekly scoring, printing every worker's peak RSS after each pass of
  ``score_week_partitioned`` (validation, input check, scoring, the list's rows, the scores);
- ``shuffle``: only the move of the rows to their partitions in the store (``keep_raw``: once
  Dask's shuffle, now each input block split into pieces), with the largest managed memory (task
  results held by a worker, polled every 0.2 s) beside the peak RSS.

    .venv/bin/python benchmarks/diag_dask_memory.py --customers 4000000 --mode shuffle

Data and model are kept in ``--dir`` between runs (generated when missing).
"""

from __future__ import annotations

import argparse
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import bench_dask as bench


def peaks(client: Any) -> list[int]:
    return sorted(client.run(bench.peak_rss_mb).values())


def scoring_passes(client: Any, settings: Any, model: Path) -> None:
    import churnflow.serving.partitioned as sp
    from churnflow.features.partitioned import read_partitioned

    start = time.perf_counter()

    def marked(name: str) -> Any:
        inner = getattr(sp, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            print(f"{time.perf_counter() - start:7.1f} s  after {name:24s} worker peaks {peaks(client)} MB, "
                  f"client peak {bench.peak_rss_mb():,} MB", flush=True)
            return out
        return call

    for name in ("validate_partitions", "inputs_and_fingerprint", "score_partitions", "list_tables",
                 "assemble_scores"):
        setattr(sp, name, marked(name))
    week = sp.score_week_partitioned(read_partitioned(settings), None, pickle.loads(model.read_bytes()), "1",
                                     settings, force=True)
    week.discard()


def shuffle_only(client: Any, settings: Any, root: Path) -> None:
    import dask

    from churnflow.features.partitioned import PartitionStore, keep_raw, read_partitioned

    held: dict[str, int] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            for worker, nbytes in client.run(lambda dask_worker: dask_worker.state.nbytes).items():
                held[worker] = max(held.get(worker, 0), nbytes)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    start = time.perf_counter()
    with PartitionStore.beside(root / "outputs") as store:
        dask.compute(keep_raw(read_partitioned(settings), store))
    stop.set()
    watcher.join()
    print(f"{time.perf_counter() - start:7.1f} s  rows into their partitions in the store: worker peaks {peaks(client)} MB, "
          f"largest managed memory {sorted(round(v / 2**20) for v in held.values())} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=["passes", "shuffle"], default="passes")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/churnflow-diag"))
    args = parser.parse_args()
    root = args.dir / str(args.customers)
    if not (root / "data").exists():
        bench.write_folders(args.customers, 42, root / "data", 500_000)
    model = args.dir / "model.pkl"
    if args.mode == "passes" and not model.exists():
        bench.write_folders(200_000, 1042, args.dir / "model_data", 500_000)
        bench.fit_model(args.dir / "model_data", model)
    from churnflow.features.partitioned import dask_client

    settings = bench.settings_for(root / "data", max(1, round(args.customers / 62_500)))
    with dask_client(settings.compute, settings) as client:
        client.wait_for_workers(2, timeout=120)
        client.run(lambda: __import__("churnflow.serving.partitioned"))  # imports, not measured
        if args.mode == "passes":
            scoring_passes(client, settings, model)
        else:
            shuffle_only(client, settings, root)


if __name__ == "__main__":
    main()
