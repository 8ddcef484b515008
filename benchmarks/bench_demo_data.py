"""Benchmark the demo-data generator: wall time, peak RSS and table sizes.

    python benchmarks/bench_demo_data.py --customers 1000000 --seed 42 [--write DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from churnflow.features.demo import generate_demo_data, write_demo_data


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--end-date", default="2026-10-31")
    parser.add_argument("--write", type=Path, default=None, help="also time write_demo_data here")
    parser.add_argument("--write-tmp", action="store_true", help="also time writing to a temp dir")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = generate_demo_data(args.customers, seed=args.seed, end_date=args.end_date)
    gen_s = time.perf_counter() - start
    n_events = len(data.events)
    print(f"customers:      {len(data.customers):,}")
    print(f"events:         {n_events:,} ({n_events / len(data.customers):.1f} per customer)")
    print(f"contacts:       {len(data.contacts):,}")
    print(f"generate time:  {gen_s:.2f} s")
    print(f"peak RSS:       {_peak_rss_mb():,.0f} MB")

    if args.write or args.write_tmp:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.write or Path(tmp)
            start = time.perf_counter()
            paths = write_demo_data(data, folder)
            write_s = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in paths.values()) / 1e6
            print(f"write time:     {write_s:.2f} s ({size_mb:,.0f} MB parquet in {folder})")
            print(f"peak RSS:       {_peak_rss_mb():,.0f} MB (after writing)")


if __name__ == "__main__":
    main()
