"""Benchmark: features and weekly scoring on the Dask engine against the local engine.

For each size, demo customers (~20 events each, ``features.demo.generate_demo_data``) are written
as folders of Parquet files (``customers.parquet/part-*.parquet``, ...; the local engine reads
the same folders), a small model is fitted once (on 200k customers generated apart), and fresh subprocesses
time, on the same data:

- ``local``: ``load_tables`` + ``infer_schema`` + ``build_features`` at one as-of date, then
  ``serving.weekly.score_week``; peak RSS of the process.
- ``dask``: a ``LocalCluster`` of ``--workers`` single-thread worker processes with
  ``--memory-limit`` each; the feature table as partitions written to a Parquet folder
  (``build_snapshots_partitioned`` + ``write_parts``), then ``score_week_partitioned``. Peak
  memory per worker (each worker's ru_maxrss), the cluster's total peak (distributed's
  ``MemorySampler``), the client's peak RSS, bytes per partition (input Parquet / partitions),
  and the largest size of the output folder during scoring (the engine's partition store).
- ``duckdb``: the RFM core (recency, frequency and spend over 3 windows) in DuckDB SQL on the
  same events, the reference of ``bench_features.py``; checked to agree with the Dask features.

Both engines' scores must be identical (checked: ``scores.parquet`` bytes). On a 2-core machine
the Dask engine shows capacity (bounded worker memory), not speed-up. Run:

    .venv/bin/python benchmarks/bench_dask.py --customers 1000000 4000000 8000000

Partitions hold ``--partition-customers`` customers each (62,500: 16 partitions at 1M, 128 at
8M), so the bytes per partition stay the same as the data grow and worker memory should stay
flat. Sizes above ``--local-max`` (1M) run on the Dask engine only: the local engine and the
DuckDB check need the whole table in one process.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

AS_OF = None  # this week's run: the day after the data end (as the score command's default)
TIMEOUT_S = 1800  # per engine run: a cluster that lost its workers fails the benchmark, it does not hang it


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def settings_for(data: Path, n_partitions: int, workers: int = 2, memory_limit: str = "2GiB") -> object:
    from churnflow.features.settings import Settings

    return Settings(
        data={"customers": str(data / "customers.parquet"), "events": str(data / "events.parquet"),
              "contacts": str(data / "contacts.parquet"),
              "columns": {"event_type": "event_type", "churn_time": "churn_time", "outcome": "outcome",
                          "pii": ["name", "email", "phone", "address"]}},
        features={"value_column": "monthly_fee"},
        serving={"capacity": 500, "output_dir": str(data.parent / "outputs")},
        compute={"engine": "dask", "n_workers": workers, "threads_per_worker": 1, "memory_limit": memory_limit,
                 "n_partitions": n_partitions},
    )


# ---- preparation -------------------------------------------------------------------------------


def write_folders(n: int, seed: int, folder: Path, chunk: int) -> dict[str, int]:
    """Demo data as folders of Parquet files, one file per ``chunk`` customers per table.

    Generated chunk by chunk (seed + chunk number, ids offset), so 8M customers never sit in
    one process: the benchmark's own memory stays that of one chunk.
    """
    from churnflow.features.demo import generate_demo_data

    sizes = dict.fromkeys(("customers_rows", "events_rows", "contacts_rows"), 0)
    for name in ("customers", "events", "contacts"):
        (folder / f"{name}.parquet").mkdir(parents=True)
    for i, start in enumerate(range(0, n, chunk)):
        data = generate_demo_data(min(chunk, n - start), seed=seed + i)
        for name in ("customers", "events", "contacts"):
            frame = getattr(data, name)
            frame = frame.assign(customer_id=frame["customer_id"] + start)
            frame.to_parquet(folder / f"{name}.parquet" / f"part-{i:03d}.parquet", index=False)
            sizes[f"{name}_rows"] += len(frame)
        del data
    for name in ("customers", "events", "contacts"):
        sizes[f"{name}_bytes"] = sum(p.stat().st_size for p in (folder / f"{name}.parquet").iterdir())
    return sizes


def fit_model(data: Path, out: Path) -> None:
    """A small real model (XGBoost on the demo features, 20 trees) pickled for the runs."""
    import dataclasses

    import xgboost as xgb

    from churnflow.features.build import build_snapshots, infer_schema
    from churnflow.features.contracts import load_tables
    from churnflow.features.profile import fit_reference
    from churnflow.features.segments import fit_segments
    from churnflow.training.bundle import ModelBundle
    from churnflow.training.calibration import Calibrator
    from churnflow.training.churn_model import model_frame

    settings = settings_for(data, 1)
    tables = load_tables(settings)
    schema = infer_schema(tables, settings)
    as_of = tables.end_date - pd.Timedelta(days=120)
    feats = build_snapshots(tables, [as_of], settings, schema)
    booster = xgb.train({"max_depth": 4, "nthread": 2, "seed": 0, "objective": "binary:logistic"},
                        xgb.DMatrix(model_frame(feats, schema.features, schema.categorical_levels), label=feats["label"], enable_categorical=True), 20)
    bundle = ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=schema, best_iteration=19,
                         segments=fit_segments(feats, schema, settings.features.value_column))
    bundle = dataclasses.replace(bundle, reference=fit_reference(feats, bundle.predict_proba(feats), schema))
    out.write_bytes(pickle.dumps(bundle))


# ---- subprocess modes --------------------------------------------------------------------------


def mode_local(data: Path, model: Path, out: Path) -> dict:
    from churnflow.features.build import build_features, infer_schema, latest_as_of
    from churnflow.features.contracts import load_tables
    from churnflow.serving.publish import write_parquet
    from churnflow.serving.weekly import score_week

    settings = settings_for(data, 1)
    bundle = pickle.loads(model.read_bytes())
    t0 = time.perf_counter()
    tables = load_tables(settings)
    schema = infer_schema(tables, settings)
    feats = build_features(tables, latest_as_of(tables), settings, schema)
    features_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    week = score_week(load_tables(settings, require_label=False), AS_OF, bundle, "1", settings,
                      force=True)
    score_s = time.perf_counter() - t0
    write_parquet(week.scores, out / "local_scores.parquet")
    feats.sort_values("customer_id").reset_index(drop=True).to_parquet(out / "local_features.parquet")
    return {"features_s": features_s, "score_s": score_s, "peak_rss_mb": peak_rss_mb(), "scored": len(week.scores)}


def _worker_spilled_mb(dask_worker: object) -> int:
    """Bytes this worker spilled to disk (0 when the worker keeps no spill buffer)."""
    spilled = getattr(getattr(dask_worker, "data", None), "spilled_total", None)
    return round(getattr(spilled, "disk", 0) / 2**20) if spilled is not None else 0


class DiskSampler:
    """The largest size of a folder while a run writes into it (the engine's partition store and
    scores pieces live in the output folder), sampled every second in a thread."""

    def __init__(self, folder: Path) -> None:
        import threading

        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            sizes = [p.stat().st_size for p in self.folder.rglob("*") if p.is_file()] if self.folder.exists() else []
            self.peak = max(self.peak, sum(sizes))

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mode_dask(data: Path, model: Path, out: Path, n_partitions: int, workers: int, memory_limit: str,
              with_features: bool) -> dict:
    from distributed.diagnostics import MemorySampler

    from churnflow.features.partitioned import (
        build_features_partitioned,
        dask_client,
        read_partitioned,
        write_parts,
    )
    from churnflow.serving.partitioned import score_week_partitioned

    settings = settings_for(data, n_partitions, workers, memory_limit)
    bundle = pickle.loads(model.read_bytes())
    sampler = MemorySampler()
    features_s = None
    with dask_client(settings.compute, settings) as client:
        client.wait_for_workers(workers, timeout=120)
        client.run(lambda: __import__("churnflow.serving.partitioned"))  # imports on the workers, not timed
        if with_features:
            with sampler.sample("features"):
                t0 = time.perf_counter()
                parts, _, _ = build_features_partitioned(read_partitioned(settings), settings, AS_OF)
                write_parts(parts, out / "dask_features")
                features_s = time.perf_counter() - t0
        with sampler.sample("scoring"), DiskSampler(settings.output_dir) as disk:
            t0 = time.perf_counter()
            week = score_week_partitioned(read_partitioned(settings), AS_OF, bundle, "1", settings,
                                          force=True)
            score_s = time.perf_counter() - t0
        worker_peaks = client.run(peak_rss_mb)
        spilled = client.run(_worker_spilled_mb)
        killed = client.run_on_scheduler(lambda dask_scheduler: sum(
            ts.suspicious for ts in dask_scheduler.tasks.values()))
    shutil.copyfile(week.scores.path, out / "dask_scores.parquet")  # written by the workers in pieces, merged
    week.discard()
    cluster_peak = {label: round(max(v for _, v in samples) / 2**20) for label, samples in sampler.samples.items()}
    return {"features_s": features_s, "score_s": score_s, "worker_peak_rss_mb": sorted(worker_peaks.values()),
            "cluster_peak_mb": cluster_peak, "client_peak_rss_mb": peak_rss_mb(), "scored": len(week.scores),
            "spilled_mb": sorted(spilled.values()), "suspicious_tasks": killed,
            "output_folder_peak_mb": round(disk.peak / 2**20)}


def mode_duckdb(data: Path, out: Path) -> dict:
    import duckdb

    feats = pd.read_parquet(out / "dask_features")
    as_of = pd.Timestamp(feats["as_of"].iloc[0])
    windows = sorted(int(c[len("frequency_"):-1]) for c in feats.columns if re.fullmatch(r"frequency_\d+d", c))
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    cols = ",\n".join(
        f"count(*) FILTER (WHERE event_time >= TIMESTAMP '{as_of}' - INTERVAL {w} DAY) AS frequency_{w}d, "
        f"coalesce(sum(amount) FILTER (WHERE event_time >= TIMESTAMP '{as_of}' - INTERVAL {w} DAY), 0) AS monetary_{w}d"
        for w in windows)
    sql = (f"SELECT customer_id, date_diff('second', max(event_time), TIMESTAMP '{as_of}') / 86400.0 AS recency_days, "
           f"{cols} FROM read_parquet('{data / 'events.parquet'}/*.parquet') "
           f"WHERE event_time < TIMESTAMP '{as_of}' GROUP BY customer_id")
    t0 = time.perf_counter()
    ref = con.execute(sql).df()
    duckdb_s = time.perf_counter() - t0
    merged = feats.merge(ref, on="customer_id", suffixes=("", "_sql"))
    assert len(merged) > len(feats) // 2, "DuckDB and the Dask features share too few customers"
    for col in ["recency_days"] + [f"frequency_{w}d" for w in windows]:
        diff = (merged[col] - merged[f"{col}_sql"]).abs().max()
        assert diff < 1e-6, f"{col} differs from DuckDB by {diff}"
    local = pd.read_parquet(out / "local_features.parquet")
    dask_sorted = feats.sort_values("customer_id", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(dask_sorted[local.columns], local, check_exact=True)
    same_scores = (out / "local_scores.parquet").read_bytes() == (out / "dask_scores.parquet").read_bytes()
    return {"duckdb_rfm_s": duckdb_s, "features_equal": True, "scores_parquet_identical": same_scores}


def run(args: list[str]) -> dict:
    try:
        out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"{args[1]} run did not finish in {TIMEOUT_S} s:\n{(exc.stderr or b'')[-3000:]!r}") from None
    if out.returncode:
        raise SystemExit(f"{args[1]} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_size(n: int, sizes: dict[str, int], local: dict | None, on_dask: dict, ref: dict | None) -> None:
    line = f"{n:>9,} customers {sizes['events_rows']:>11,} events | dask scoring {on_dask['score_s']:.1f} s, "
    line += (f"worker peaks {on_dask['worker_peak_rss_mb']} MB, cluster peak {on_dask['cluster_peak_mb']} MB, "
             f"client {on_dask['client_peak_rss_mb']:,} MB, spilled {on_dask['spilled_mb']} MB, "
             f"suspicious tasks {on_dask['suspicious_tasks']}, "
             f"output folder peak on disk {on_dask.get('output_folder_peak_mb', 0):,} MB")
    if local is not None and ref is not None:
        line += (f" | features: local {local['features_s']:.1f} s, dask {on_dask['features_s']:.1f} s, DuckDB RFM "
                 f"{ref['duckdb_rfm_s']:.2f} s | local scoring {local['score_s']:.1f} s, peak {local['peak_rss_mb']:,} MB"
                 f" | scores.parquet identical: {ref['scores_parquet_identical']}")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[200_000])
    parser.add_argument("--partition-customers", type=int, default=62_500,
                        help="customers per partition: the partition count grows with the data, the bytes per "
                             "partition stay the same")
    parser.add_argument("--chunk", type=int, default=500_000, help="customers per generated Parquet file")
    parser.add_argument("--local-max", type=int, default=1_000_000,
                        help="largest size also run on the local engine (and checked against it and DuckDB)")
    parser.add_argument("--model-customers", type=int, default=200_000,
                        help="customers of the (separately generated) data the model is fitted on")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GiB")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--partitions", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--features", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["local", "dask", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        data, out = args.dir / "data", args.dir
        model = args.dir.parent / "model.pkl"
        result = {"local": lambda: mode_local(data, model, out),
                  "dask": lambda: mode_dask(data, model, out, args.partitions, args.workers, args.memory_limit,
                                            args.features),
                  "duckdb": lambda: mode_duckdb(data, out)}[args.mode]()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.customers):
            folder = Path(tmp) / str(n)
            sizes = write_folders(n, args.seed, folder / "data", args.chunk)
            if not (Path(tmp) / "model.pkl").exists():  # one model, on data of its own, scores every size
                write_folders(args.model_customers, args.seed + 1000, Path(tmp) / "model_data", args.chunk)
                fit_model(Path(tmp) / "model_data", Path(tmp) / "model.pkl")
                shutil.rmtree(Path(tmp) / "model_data")
            n_partitions = max(1, round(n / args.partition_customers))
            compare = n <= args.local_max
            common = ["--dir", str(folder), "--partitions", str(n_partitions), "--workers", str(args.workers),
                      "--memory-limit", args.memory_limit]
            local = run(["--mode", "local", *common]) if compare else None
            on_dask = run(["--mode", "dask", *common, *(["--features"] if compare else [])])
            ref = run(["--mode", "duckdb", *common]) if compare else None
            input_bytes = sizes["customers_bytes"] + sizes["events_bytes"] + sizes["contacts_bytes"]
            print(json.dumps({"customers": n, **sizes, "partitions": n_partitions, "local": local, "dask": on_dask,
                              "duckdb": ref, "input_mb_per_partition": round(input_bytes / 2**20 / n_partitions, 1)}))
            _print_size(n, sizes, local, on_dask, ref)
            shutil.rmtree(folder)  # 8M customers of Parquet need not stay on disk while the next size runs


if __name__ == "__main__":
    main()
