"""Benchmark: the whole training recipe (``training.recipe.train_model``), wall time and quality.

For each config: load and validate the data, then ``train_model`` with a fresh Optuna storage in
a temp folder (so no earlier study is resumed). Printed: wall time of loading and of training,
the plan (folds), the chosen family with every candidate's mean cross-validated metric, and the
test metrics of the model that never saw the test rows beside every baseline on the same rows.
CPU time is printed beside wall time: on a shared machine the wall time depends on the load.

    .venv/bin/python benchmarks/bench_training.py                      # demo data (20k customers)
    .venv/bin/python benchmarks/bench_training.py --config configs/cdnow.toml

Without ``--config`` a temp project gets the shipped ``churnflow.toml`` and demo data
(``--customers``, seed 42), as ``churnflow demo`` would; ``--trials`` as the demo's default (15).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["roc_auc", "pr_auc", "log_loss", "lift_top10"]


def demo_project(folder: Path, customers: int) -> Path:
    from churnflow.features.demo import generate_demo_data, write_demo_data

    shutil.copy(ROOT / "churnflow.toml", folder / "churnflow.toml")
    write_demo_data(generate_demo_data(customers, seed=42), folder / "data" / "demo")
    return folder / "churnflow.toml"


def run(config: Path, trials: int | None, store: Path) -> None:
    from churnflow.features.contracts import load_tables
    from churnflow.features.settings import load_settings
    from churnflow.training.recipe import train_model

    overrides = {"storage": f"sqlite:///{store / 'optuna.db'}"} | ({"n_trials": trials} if trials else {})
    settings = load_settings(config, training=overrides)
    started, cpu_started = time.perf_counter(), time.process_time()
    tables = load_tables(settings)
    loaded = time.perf_counter()
    model = train_model(tables, settings)
    trained, cpu = time.perf_counter(), time.process_time() - cpu_started
    ev, choice = model.evaluation, model.choice
    print(f"\n== {config} ({settings.training.n_trials} trials, objective {ev.objective})")
    print(f"load + validate {loaded - started:.1f} s, train_model {trained - loaded:.1f} s "
          f"(total {trained - started:.1f} s wall, {cpu:.1f} s CPU of this process)")
    print(f"plan {model.plan.to_dict()}; {len(model.tuning.trials)} trials")
    print(f"chosen: {choice.family} (tree weight {choice.tree_weight}, C {choice.linear_c}, "
          f"{choice.n_rounds} rounds); fitted through {model.bundle.fitted_through}")
    print("mean CV metric per candidate:", {k: round(v, 4) for k, v in choice.cv_scores.items()})
    table = pd.DataFrame({"model": ev.metrics} | ev.baselines).T
    print(f"test rows: {ev.n_test}, churn rate {ev.churn_rate:.3f}")
    print(table[[m for m in METRICS if m in table.columns]].round(4).to_string())
    print("verdict:", ev.verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", help="config file(s); default: demo data")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=None, help="default: the demo's 15, else the config's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="churnflow-bench-training-") as tmp:
        folder = Path(tmp)
        if not args.config:
            run(demo_project(folder, args.customers), args.trials or 15, folder)
        for config in args.config or []:
            run(config.resolve(), args.trials, folder)


if __name__ == "__main__":
    main()
