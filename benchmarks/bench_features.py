"""Benchmark: point-in-time features for 100k and 1M demo customers (~20 events each).

Prints wall time and peak memory of churnflow's ``build_features`` for one as-of date (schema
inference included, with its BG/NBD fit; a training snapshot before the schema's fit date
refits BG/NBD on its own past), the same at scoring (BG/NBD parameters stored, no refit), the
BG/NBD fit alone, and
beside it the same core aggregations (recency, frequency and monetary over 3 windows) in DuckDB
SQL, as the reference for how fast this can go on this machine. CPU time (``process_time``, all
threads) is printed beside wall time: on a shared machine it moves less than wall time. Validation
is the process's first use of the compiled loops (``features/compiled.py``), so it includes
Numba's start (~0.2 s, once per process); validation and the features at scoring are then timed
again in the same process, as a Dask worker runs them for every partition after its first
(DuckDB's own start, its import and connection, is timed apart and printed, not added to its
query's time). Run:

    .venv/bin/python benchmarks/bench_features.py --customers 100000 1000000

Each size runs in a fresh subprocess so peak memory (ru_maxrss) belongs to that size alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(n: int, seed: int) -> dict[str, float]:
    import pandas as pd

    from churnflow.features.build import build_features, infer_schema, with_btyd_fitted
    from churnflow.features.contracts import validate_tables
    from churnflow.features.demo import generate_demo_data
    from churnflow.features.settings import Settings

    settings = Settings(data={"contacts": "", "columns": {"event_type": "event_type", "churn_time": "churn_time",
                                                          "pii": ["name", "email", "phone", "address"]}})
    data = generate_demo_data(n, seed=seed)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    tables = validate_tables(data.customers, data.events, None, settings)
    t_validate, c_validate = time.perf_counter() - t0, time.process_time() - c0
    as_of = pd.Timestamp("2026-08-01")
    t0 = time.perf_counter()
    schema = infer_schema(tables, settings)
    feats = build_features(tables, as_of, settings, schema)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    with_btyd_fitted(tables, as_of, settings, schema)
    t_btyd = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    build_features(tables, pd.Timestamp(schema.btyd.get("as_of", as_of)), settings, schema)
    t_scoring, c_scoring = time.perf_counter() - t0, time.process_time() - c0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Again, as a Dask worker does for every partition after its first: no start costs left.
    t0 = time.perf_counter()
    validate_tables(data.customers, data.events, None, settings)
    t_validate_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_features(tables, pd.Timestamp(schema.btyd.get("as_of", as_of)), settings, schema)
    t_scoring_warm = time.perf_counter() - t0

    events = tables.events[["customer_id", "event_time", "amount"]]
    t0 = time.perf_counter()
    import duckdb  # (its start, import and connection, is timed apart: churnflow's first call holds its own)

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    t_duckdb_start = time.perf_counter() - t0
    con.register("events", events)
    windows = schema.windows_days
    cols = ",\n".join(
        f"count(*) FILTER (WHERE event_time >= TIMESTAMP '{as_of}' - INTERVAL {w} DAY) AS frequency_{w}d, "
        f"coalesce(sum(amount) FILTER (WHERE event_time >= TIMESTAMP '{as_of}' - INTERVAL {w} DAY), 0) AS monetary_{w}d"
        for w in windows
    )
    sql = (
        f"SELECT customer_id, date_diff('second', max(event_time), TIMESTAMP '{as_of}') / 86400.0 AS recency_days, "
        f"{cols} FROM events WHERE event_time < TIMESTAMP '{as_of}' GROUP BY customer_id"
    )
    t0, c0 = time.perf_counter(), time.process_time()
    ref = con.execute(sql).df()
    t_duckdb, c_duckdb = time.perf_counter() - t0, time.process_time() - c0

    # The two must agree, or the comparison means nothing.
    merged = feats.merge(ref, on="customer_id", suffixes=("", "_sql"))
    for col in ["recency_days"] + [f"frequency_{w}d" for w in windows]:
        diff = (merged[col] - merged[f"{col}_sql"]).abs().max()
        assert diff < 1e-6, f"{col} differs from DuckDB by {diff}"
    for col in [f"monetary_{w}d" for w in windows]:  # sums in another order: equal to rounding
        rel = ((merged[col] - merged[f"{col}_sql"]).abs() / merged[col].abs().clip(lower=1)).max()
        assert rel < 1e-9, f"{col} differs from DuckDB by {rel} (relative)"
    return {
        "customers": n,
        "events": len(tables.events),
        "active_customers": len(feats),
        "features": len(schema.features),
        "validate_s": round(t_validate, 2),
        "features_s": round(t_features, 2),
        "scoring_features_s": round(t_scoring, 2),
        "validate_again_s": round(t_validate_warm, 2),
        "scoring_features_again_s": round(t_scoring_warm, 2),
        "btyd_fit_s": round(t_btyd, 2),
        "duckdb_rfm_s": round(t_duckdb, 2),
        "duckdb_start_s": round(t_duckdb_start, 2),
        "cpu_validate_s": round(c_validate, 2),
        "cpu_scoring_features_s": round(c_scoring, 2),
        "cpu_duckdb_rfm_s": round(c_duckdb, 2),
        "peak_rss_mb": round(rss_peak),
        "rss_after_generation_mb": round(rss_data),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.customers[0], args.seed)))
        return
    for n in args.customers:
        out = subprocess.run([sys.executable, __file__, "--one", "--customers", str(n), "--seed", str(args.seed)],
                             check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{result['customers']:>9,} customers {result['events']:>11,} events | validate {result['validate_s']:6.2f} s | "
            f"features {result['features_s']:6.2f} s ({result['features']} features; at scoring "
            f"{result['scoring_features_s']:.2f} s; BG/NBD fit {result['btyd_fit_s']:.2f} s) | DuckDB RFM {result['duckdb_rfm_s']:5.2f} s | "
            f"peak RSS {result['peak_rss_mb']:,} MB | (validate + features at scoring) / DuckDB "
            f"{(result['validate_s'] + result['scoring_features_s']) / result['duckdb_rfm_s']:.1f}x | CPU time "
            f"(both threads of DuckDB's): validate {result['cpu_validate_s']:.2f} s, features at scoring "
            f"{result['cpu_scoring_features_s']:.2f} s, DuckDB {result['cpu_duckdb_rfm_s']:.2f} s | the same again in "
            f"the same process: validate {result['validate_again_s']:.2f} s, features at scoring "
            f"{result['scoring_features_again_s']:.2f} s, "
            f"{(result['validate_again_s'] + result['scoring_features_again_s']) / result['duckdb_rfm_s']:.1f}x DuckDB | "
            f"DuckDB's own start (import, connection; not in its time) {result['duckdb_start_s']:.2f} s: first calls "
            f"with each side's start {(result['validate_s'] + result['scoring_features_s']) / (result['duckdb_rfm_s'] + result['duckdb_start_s']):.1f}x"
        )


if __name__ == "__main__":
    main()
