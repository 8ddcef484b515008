"""Benchmark: Optuna tuning with and without pruning for the same wall-clock budget, then one train.

On N demo customers (default 100k) the out-of-time snapshots are built exactly as the train flow
builds them (``validate_tables`` → ``plan_for`` → ``infer_schema`` → ``training_snapshots``
→ ``fold_positions``: rolling-origin folds). Then ``training.tune.tune`` runs twice for ``--budget`` seconds with a
trial count so large that the timeout binds: once with ``training.pruning = true`` (median
pruner), once with ``false``, each with fresh SQLite storage in a temp folder and the same seed.
Printed for both: trials completed, trials pruned, best validation PR-AUC and the actual tuning
wall time (Optuna checks the timeout between trials, so the last trial may overrun).

Finally one full ``churnflow train --trials N`` runs as a subprocess on the same kind of data
written to a temp project (tracking, Optuna storage and outputs inside it), and its wall time
is reported. Run:

    .venv/bin/python benchmarks/bench_tuning.py --customers 100000 --budget 120 --trials 20

The tuning part runs in a fresh subprocess so its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "churnflow.toml"


def quiet_env(home: Path) -> dict[str, str]:
    """Environment for child processes: no telemetry, Prefect state inside the temp folder."""
    return os.environ | {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(home / "prefect"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def build_train_snapshots(n: int, seed: int, settings):
    """Demo data → validated tables → the recipe's plan, development rows and folds (same functions)."""
    from churnflow.features.build import infer_schema
    from churnflow.features.contracts import validate_tables
    from churnflow.features.demo import generate_demo_data
    from churnflow.training.split import fold_positions, plan_for, training_snapshots

    data = generate_demo_data(n, seed=seed)
    tables = validate_tables(data.customers, data.events, data.contacts, settings)
    del data
    plan = plan_for(tables, settings)
    schema = infer_schema(tables, settings)
    dev, _test = training_snapshots(tables, plan, settings, schema)
    return schema, dev, fold_positions(dev, plan, settings.training.seed), plan


def run_tuning(n: int, seed: int, budget: float, n_trials: int) -> dict:
    import logging

    from optuna.trial import TrialState

    from churnflow.features.settings import load_settings
    from churnflow.training.tune import tune

    logging.getLogger("churnflow.training.tune").setLevel(logging.WARNING)
    base = load_settings(CONFIG)
    t0 = time.perf_counter()
    schema, dev, folds, plan = build_train_snapshots(n, seed, base)
    t_snap = time.perf_counter() - t0
    out: dict = {
        "customers": n,
        "snapshots_s": round(t_snap, 1),
        "development_rows": len(dev),
        "folds": len(folds),
        "features": len(schema.features),
        "budget_s": budget,
        "runs": {},
    }
    for pruning in (True, False):
        with tempfile.TemporaryDirectory(prefix="churnflow-bench-tune-") as tmp:
            settings = load_settings(CONFIG, training={
                "n_trials": n_trials, "timeout_seconds": budget, "pruning": pruning, "seed": seed,
                "storage": f"sqlite:///{tmp}/optuna.db",
            })
            t0 = time.perf_counter()
            result = tune(dev, folds, schema, settings, test_as_of=plan.test)
            wall = time.perf_counter() - t0
            trials = result.study.get_trials(deepcopy=False)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            out["runs"]["pruning" if pruning else "no pruning"] = {
                "wall_s": round(wall, 1),
                "trials": len(trials),
                "completed": len(done),
                "pruned": sum(t.state == TrialState.PRUNED for t in trials),
                "best_pr_auc": round(result.best_value, 5),
                "best_trial": result.study.best_trial.number,
                "best_iteration": result.best_iteration,
                "median_completed_trial_s": round(float(result.trials.loc[
                    result.trials["state"] == "COMPLETE", "duration_s"].median()), 2),
            }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def time_train_cli(n: int, seed: int, trials: int, timeout: float | None) -> dict:
    """Write demo data into a temp project and time ``churnflow train`` on it."""
    from churnflow.features.demo import generate_demo_data, write_demo_data

    tmp = Path(tempfile.mkdtemp(prefix="churnflow-bench-train-"))
    try:
        shutil.copy(CONFIG, tmp / "churnflow.toml")  # every path in it is relative to its folder
        write_demo_data(generate_demo_data(n, seed=seed), tmp / "data" / "demo")
        cmd = [str(Path(sys.executable).parent / "churnflow"), "train", "--config", str(tmp / "churnflow.toml"),
               "--trials", str(trials)]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=quiet_env(tmp), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"churnflow train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        studies = optuna.get_all_study_summaries(f"sqlite:///{tmp}/mlruns/optuna.db")
        n_trials = sum(s.n_trials for s in studies)
        return {"customers": n, "trials_requested": trials, "trials_run": n_trials, "wall_s": round(wall, 1),
                "peak_rss_mb": round(peak)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=120, help="tuning wall-clock budget per run (s)")
    parser.add_argument("--max-trials", type=int, default=1000, help="n_trials of the tuning runs (timeout binds)")
    parser.add_argument("--trials", type=int, default=20, help="trials of the timed `churnflow train`")
    parser.add_argument("--train-timeout", type=float, default=None,
                        help="--timeout of the timed train (default: training.timeout_seconds of churnflow.toml)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-train", action="store_true", help="only the pruning comparison")
    parser.add_argument("--mode", choices=["tune", "train"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "tune":
        print(json.dumps(run_tuning(args.customers, args.seed, args.budget, args.max_trials)))
        return
    if args.mode == "train":
        print(json.dumps(time_train_cli(args.customers, args.seed, args.trials, args.train_timeout)))
        return

    common = ["--customers", str(args.customers), "--seed", str(args.seed)]
    r = child([*common, "--mode", "tune", "--budget", str(args.budget), "--max-trials", str(args.max_trials)])
    print(f"{r['customers']:,} customers: snapshots built in {r['snapshots_s']} s "
          f"({r['development_rows']:,} development rows in {r['folds']} folds, {r['features']} features); "
          f"tuning budget {r['budget_s']:.0f} s each; peak RSS {r['peak_rss_mb']:,} MB")
    for name, run in r["runs"].items():
        print(f"  {name:<11} | {run['trials']:>4} trials: {run['completed']:>4} completed, {run['pruned']:>4} pruned | "
              f"best mean-fold PR-AUC {run['best_pr_auc']:.5f} (trial {run['best_trial']}, {run['best_iteration'] + 1} rounds) | "
              f"median completed trial {run['median_completed_trial_s']:.1f} s | wall {run['wall_s']:.1f} s")
    if args.skip_train:
        return
    extra = ["--trials", str(args.trials)] + (["--train-timeout", str(args.train_timeout)] if args.train_timeout else [])
    t = child([*common, "--mode", "train", *extra])
    print(f"churnflow train --trials {t['trials_requested']} on {t['customers']:,} customers: "
          f"{t['wall_s']:.1f} s wall ({t['trials_run']} trials run), peak RSS {t['peak_rss_mb']:,} MB")


if __name__ == "__main__":
    main()
