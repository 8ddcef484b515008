"""Benchmark: end-to-end weekly scoring (sources → published priority list) for 100k and 1M customers.

1. Trains a small model once with ``churnflow train --trials N`` on 100k demo customers in a temp
   project (tracking, Optuna storage and outputs inside it).
2. For each size, demo data are generated and written as Parquet by one subprocess, then a fresh
   subprocess runs what the score flow runs, without Prefect, each call timed: load the champion,
   read sources, validate, ``serving.weekly.score_week`` (the same function the flow calls:
   chunked scoring, drift gate, reasons for the listed customers only, list, summary, report)
   and ``publish_week``. Total wall time and peak RSS (ru_maxrss) belong to that subprocess alone.
3. With ``--cli`` the same size is also scored by the real command, ``churnflow score`` (Prefect
   flow and all), in its own process: wall time and peak RSS of that process.
4. Reasons for ALL active customers at one size (default 100k): ``explain_customers`` on every id
   (features + XGBoost ``pred_contribs`` + vectorised phrases) against the plain way,
   ``serving.reasons.reasons_reference`` (``shap.TreeExplainer(booster).shap_values`` + per-row
   Python formatting) on the same rows, and whether the reasons agree.

Targets (from the issue): 1M customers end to end under 2 minutes, peak memory under 8 GB. Run:

    .venv/bin/python benchmarks/bench_scoring.py --customers 100000 1000000 --cli
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

from churnflow.training.churn_model import model_frame

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "churnflow.toml"
TARGET_S = 120.0
TARGET_MB = 8 * 1024


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def quiet_env(project: Path) -> dict[str, str]:
    return os.environ | {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(project / "prefect"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def overrides(data: Path, out: Path) -> dict[str, dict[str, str]]:
    """Settings of a scoring run: the project's model registry, this size's data and outputs."""
    return {
        "data": {"customers": str(data / "customers.parquet"), "events": str(data / "events.parquet"),
                 "contacts": str(data / "contacts.parquet")},
        "serving": {"output_dir": str(out)},
    }


def env_overrides(values: dict[str, dict[str, str]]) -> dict[str, str]:
    return {f"CHURNFLOW_{section.upper()}__{key.upper()}": v
            for section, keys in values.items() for key, v in keys.items()}


# ---- subprocess modes --------------------------------------------------------------------------


def mode_train(project: Path, n: int, seed: int, trials: int) -> dict:
    from churnflow.features.demo import generate_demo_data, write_demo_data

    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG, project / "churnflow.toml")  # every path in it is relative to its folder
    write_demo_data(generate_demo_data(n, seed=seed), project / "data" / "demo")
    cmd = [str(Path(sys.executable).parent / "churnflow"), "train", "--config", str(project / "churnflow.toml"),
           "--trials", str(trials)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=quiet_env(project), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"churnflow train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"customers": n, "trials": trials, "wall_s": round(wall, 1)}


def mode_gen(out: Path, n: int, seed: int) -> dict:
    from churnflow.features.demo import generate_demo_data, write_demo_data

    t0 = time.perf_counter()
    data = generate_demo_data(n, seed=seed)
    write_demo_data(data, out)
    return {"customers": n, "events": len(data.events), "contacts": len(data.contacts),
            "gen_write_s": round(time.perf_counter() - t0, 1)}


def mode_score(project: Path, data: Path, out: Path) -> dict:
    """What the score flow runs, as plain calls: load, read, validate, ``score_week``, publish."""
    t_import = time.perf_counter()
    from churnflow.features.contracts import load_tables, read_raw_tables
    from churnflow.features.settings import load_settings
    from churnflow.serving.publish import publish_week, read_previous_list, standard_writers
    from churnflow.serving.weekly import score_week, scoring_date
    from churnflow.training.registry import load_bundle

    t_import = time.perf_counter() - t_import
    steps: dict[str, float] = {}
    rss: dict[str, int] = {}
    clock = [time.perf_counter()]

    def done(name: str) -> None:
        now = time.perf_counter()
        steps[name] = round(now - clock[0], 2)
        rss[name] = peak_rss_mb()
        clock[0] = now

    start = clock[0]
    settings = load_settings(project / "churnflow.toml", **overrides(data, out))
    bundle, version = load_bundle(settings)
    done("load model")
    raw = read_raw_tables(settings)
    done("read sources")
    tables = load_tables(settings, raw=raw, require_label=False)
    del raw
    day = scoring_date(tables, None)
    done("validate")
    week = score_week(tables, day, bundle, version, settings,
                      previous_list=read_previous_list(settings.output_dir, day), force=True)
    done("score_week")
    files = standard_writers(week.scores, week.priority_list, week.summary, week.report_html)
    publish_week(settings.output_dir, day, files)
    done("publish")
    return {
        "customers": len(tables.customers),
        "events": len(tables.events),
        "as_of": str(day.date()),
        "scored": len(week.scores),
        "partitions": week.n_partitions,
        "listed": len(week.priority_list),
        "drift_warnings": len(week.warnings),
        "import_s": round(t_import, 2),
        "steps_s": steps,
        "peak_rss_after_mb": rss,
        "total_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def mode_cli(project: Path, data: Path, out: Path) -> dict:
    """``churnflow score`` as a user runs it; wall time and peak RSS of that process."""
    cmd = [str(Path(sys.executable).parent / "churnflow"), "score", "--config", str(project / "churnflow.toml")]
    env = quiet_env(project) | env_overrides(overrides(data, out))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"churnflow score failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def mode_reasons(project: Path, data: Path, out: Path, skip_reference: bool) -> dict:
    """Reasons for every active customer: explain_customers against shap + per-row formatting."""
    import pandas as pd

    from churnflow.features.build import build_features, latest_as_of
    from churnflow.features.contracts import cut_at, load_tables
    from churnflow.features.labels import active_customers
    from churnflow.features.settings import load_settings
    from churnflow.serving.reasons import reasons_reference, top_reasons
    from churnflow.serving.score import explain_customers
    from churnflow.training.registry import load_bundle

    settings = load_settings(project / "churnflow.toml", **overrides(data, out))
    bundle, _ = load_bundle(settings)
    tables = load_tables(settings)
    day = latest_as_of(tables)
    tables = cut_at(tables, day)
    ids = active_customers(tables, day, settings.churn.min_tenure_days, require_history=True)
    res: dict = {"rows": len(ids), "features": len(bundle.schema.features), "trees": bundle.best_iteration + 1}

    t0 = time.perf_counter()
    fast = explain_customers(tables, day, bundle, settings, ids)
    res["explain_customers_s"] = round(time.perf_counter() - t0, 2)
    # The same work in its three parts (one partition), for the breakdown.
    t0 = time.perf_counter()
    feats = build_features(tables, day, settings, bundle.schema, customer_ids=ids)
    res["features_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    contrib = bundle.contributions(feats)
    res["pred_contribs_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    top_reasons(contrib, feats, bundle.schema.features, bundle.dictionary)
    res["top_reasons_s"] = round(time.perf_counter() - t0, 2)
    if skip_reference:
        return res | {"peak_rss_mb": peak_rss_mb()}

    import shap
    import xgboost as xgb

    booster = bundle.booster[: bundle.best_iteration + 1]  # the trees the model predicts with
    frame = model_frame(feats, bundle.schema.features, bundle.schema.categorical_levels)
    t0 = time.perf_counter()
    ref = reasons_reference(booster, frame, feats, bundle.schema.features, bundle.dictionary)
    res["reference_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    shap.TreeExplainer(booster).shap_values(xgb.DMatrix(frame[bundle.schema.features], enable_categorical=True))
    res["shap_s"] = round(time.perf_counter() - t0, 2)
    ref.insert(0, "customer_id", feats["customer_id"].to_numpy())
    merged = fast.merge(ref, on="customer_id", suffixes=("", "_ref"))
    cols = ["reason_1", "reason_2", "reason_3", "reason_group_1"]
    differ = pd.concat([merged[c] != merged[f"{c}_ref"] for c in cols], axis=1).any(axis=1)
    res["compared"] = len(merged)
    res["rows_differ"] = int(differ.sum())
    return res | {"peak_rss_mb": peak_rss_mb()}


# ---- driver ----------------------------------------------------------------------------------


def child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_score(r: dict) -> None:
    print(f"{r['customers']:>9,} customers {r['events']:>11,} events as of {r['as_of']}: scored {r['scored']:,} in "
          f"{r['partitions']} partition(s), listed {r['listed']:,}, drift warnings {r['drift_warnings']}")
    for name, s in r["steps_s"].items():
        print(f"    {name:<18} {s:7.2f} s   (peak RSS so far {r['peak_rss_after_mb'][name]:,} MB)")
    ok_t = "met" if r["total_s"] < TARGET_S else "NOT met"
    ok_m = "met" if r["peak_rss_mb"] < TARGET_MB else "NOT met"
    print(f"    {'total':<18} {r['total_s']:7.2f} s   peak RSS {r['peak_rss_mb']:,} MB "
          f"(imports {r['import_s']:.1f} s not counted) | targets <{TARGET_S:.0f} s: {ok_t}, <8 GB: {ok_m}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--train-customers", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=5, help="Optuna trials of the one training run")
    parser.add_argument("--seed", type=int, default=42, help="seed of the training data (scoring data: seed + 1)")
    parser.add_argument("--cli", action="store_true", help="also time `churnflow score` for each size")
    parser.add_argument("--reasons-customers", type=int, default=100_000,
                        help="size for the all-customers reasons comparison (0 = skip)")
    parser.add_argument("--skip-reference", action="store_true", help="reasons: skip the shap reference")
    parser.add_argument("--project", type=Path, default=None,
                        help="keep the trained model and generated data here and reuse them (default: temp dir)")
    parser.add_argument("--mode", choices=["train", "gen", "score", "cli", "reasons"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.mode:
        n = args.customers[0]
        result = {
            "train": lambda: mode_train(args.project, n, args.seed, args.trials),
            "gen": lambda: mode_gen(args.data, n, args.seed),
            "score": lambda: mode_score(args.project, args.data, args.out),
            "cli": lambda: mode_cli(args.project, args.data, args.out),
            "reasons": lambda: mode_reasons(args.project, args.data, args.out, args.skip_reference),
        }[args.mode]()
        print(json.dumps(result))
        return

    project = args.project or Path(tempfile.mkdtemp(prefix="churnflow-bench-score-"))
    project = project.resolve()
    try:
        if not (project / "mlruns" / "mlflow.db").exists():
            t = child(["--mode", "train", "--project", str(project), "--customers", str(args.train_customers),
                       "--seed", str(args.seed), "--trials", str(args.trials)])
            print(f"trained the model: churnflow train --trials {t['trials']} on {t['customers']:,} customers "
                  f"in {t['wall_s']:.1f} s")
        else:
            print(f"reusing the model registered in {project / 'mlruns'}")

        def data_for(n: int) -> Path:
            folder = project / f"data_{n}_{args.seed + 1}"
            if not (folder / "contacts.parquet").exists():
                g = child(["--mode", "gen", "--data", str(folder), "--customers", str(n), "--seed", str(args.seed + 1)])
                print(f"generated {g['customers']:,} customers / {g['events']:,} events in {g['gen_write_s']:.1f} s")
            return folder

        for n in args.customers:
            data = data_for(n)
            out = Path(tempfile.mkdtemp(prefix="outputs-", dir=project))
            r = child(["--mode", "score", "--project", str(project), "--data", str(data), "--out", str(out)])
            print_score(r)
            if args.cli:
                out = Path(tempfile.mkdtemp(prefix="outputs-cli-", dir=project))
                c = child(["--mode", "cli", "--project", str(project), "--data", str(data), "--out", str(out)])
                print(f"    churnflow score (CLI, Prefect flow, imports included): {c['wall_s']:.1f} s wall, "
                      f"peak RSS {c['peak_rss_mb']:,} MB")

        if args.reasons_customers:
            n = args.reasons_customers
            data = data_for(n)
            out = Path(tempfile.mkdtemp(prefix="outputs-", dir=project))
            extra = ["--skip-reference"] if args.skip_reference else []
            r = child(["--mode", "reasons", "--project", str(project), "--data", str(data), "--out", str(out), *extra])
            print(f"reasons for ALL {r['rows']:,} active customers ({r['features']} features, {r['trees']} trees):")
            print(f"    explain_customers (features + pred_contribs + top_reasons): {r['explain_customers_s']:.2f} s "
                  f"[features {r['features_s']:.2f} s, pred_contribs {r['pred_contribs_s']:.2f} s, "
                  f"top_reasons {r['top_reasons_s']:.2f} s]")
            if "reference_s" in r:
                per_row = r["reference_s"] - r["shap_s"]
                fast_part = r["pred_contribs_s"] + r["top_reasons_s"]
                print(f"    reasons_reference (shap TreeExplainer + per-row formatting): {r['reference_s']:.2f} s "
                      f"[shap {r['shap_s']:.2f} s, per-row phrases {per_row:.2f} s]")
                print(f"    speed-up on the same feature rows: {r['reference_s'] / fast_part:.1f}x "
                      f"(phrases {per_row / r['top_reasons_s']:.1f}x, contributions {r['shap_s'] / r['pred_contribs_s']:.1f}x); "
                      f"rows whose reasons differ: {r['rows_differ']} of {r['compared']:,}")
            print(f"    peak RSS {r['peak_rss_mb']:,} MB")
    finally:
        if args.project is None:
            shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
