"""Run every benchmark in sequence (``make bench``).

By default with small sizes, as a quick check that the benchmarks still run (a few minutes on
2 cores; the figures of a quick run say little). ``--full`` runs the sizes of the performance
issue (100k and 1M customers, 120 s tuning budgets; about 25 minutes on 2 cores):

    .venv/bin/python benchmarks/run_all.py [--full] [--only scoring tuning ...]

Each benchmark runs as its own process with its output streamed; the run continues past a
failing benchmark and exits non-zero at the end if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK: dict[str, list[str]] = {
    "demo_data": ["bench_demo_data.py", "--customers", "20000"],
    "features": ["bench_features.py", "--customers", "20000"],
    "reasons": ["bench_reasons.py", "--rows", "20000"],
    "tuning": ["bench_tuning.py", "--customers", "10000", "--budget", "15", "--trials", "3"],
    "scoring": ["bench_scoring.py", "--customers", "20000", "--train-customers", "10000", "--trials", "2",
                "--reasons-customers", "20000"],
}
FULL: dict[str, list[str]] = {
    "demo_data": ["bench_demo_data.py", "--customers", "1000000"],
    "features": ["bench_features.py", "--customers", "100000", "1000000"],
    "reasons": ["bench_reasons.py", "--rows", "100000"],
    "tuning": ["bench_tuning.py", "--customers", "100000", "--budget", "120", "--trials", "20"],
    "scoring": ["bench_scoring.py", "--customers", "100000", "1000000", "--cli", "--reasons-customers", "100000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the issue's sizes (100k and 1M customers)")
    parser.add_argument("--only", nargs="+", choices=list(QUICK), help="run only these benchmarks")
    args = parser.parse_args()
    plan = FULL if args.full else QUICK
    failed = []
    for name, cmd in plan.items():
        if args.only and name not in args.only:
            continue
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], cwd=HERE.parent).returncode
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        if code:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
