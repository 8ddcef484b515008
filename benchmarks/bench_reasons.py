"""Benchmark: vectorised ``top_reasons`` against the plain per-row ``reasons_reference``.

Trains a small XGBoost model on synthetic data with ~40 features (one categorical), then times
both ways of producing three plain-language reasons per customer for N rows and checks that they
agree. Run: ``python benchmarks/bench_reasons.py --rows 100000``. ``--flags`` adds a 0/1 flag read
as yes/no and a category with underscored values (read as words), the snapshot-table paths.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churnflow.serving.reasons import reasons_reference, top_reasons

PLANS = ["basic", "plus", "pro", "enterprise"]
TRAVEL = ["Non-Travel", "Travel_Rarely", "Travel_Frequently"]


def synthetic(n: int, n_numeric: int, seed: int, flags: bool = False) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Customers with RFM-like features, some missing values, and a churn label (``flags``: plus
    a 0/1 flag and an underscored category)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray | pd.Categorical] = {
        "recency_days": rng.exponential(40, n).round(),
        "gap_mean_days": rng.exponential(15, n).round(1),
        "tenure_days": rng.integers(30, 2000, n).astype(float),
        "monetary_365d": rng.gamma(2, 150, n).round(2),
        "frequency_90d": rng.poisson(5, n).astype(float),
    }
    for i in range(n_numeric - len(cols)):
        cols[f"x{i:02d}"] = rng.normal(size=n)
    cols["plan"] = pd.Categorical(rng.choice(PLANS, n), categories=PLANS)
    if flags:
        cols["active"] = rng.integers(0, 2, n).astype(float)
        cols["travel"] = pd.Categorical(rng.choice(TRAVEL, n), categories=TRAVEL)
    frame = pd.DataFrame(cols)
    frame.loc[rng.random(n) < 0.05, "gap_mean_days"] = np.nan
    logit = (
        0.03 * frame["recency_days"] - 0.002 * frame["tenure_days"] - 0.3 * frame["frequency_90d"]
        + 0.8 * (frame["plan"] == "basic") + 0.3 * frame["x00"] - 0.5
    )
    if flags:
        logit = logit - 0.8 * frame["active"] + 0.6 * (frame["travel"] == "Travel_Frequently")
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    dictionary = {
        "recency_days": {"group": "recency", "phrase": "no activity for {recency_days:.0f} days; usually every {gap_mean_days:.0f} days"},
        "gap_mean_days": {"group": "rhythm", "phrase": "usually active every {gap_mean_days:.1f} days"},
        "tenure_days": {"group": "tenure", "phrase": "customer for {tenure_days:.0f} days"},
        "monetary_365d": {"group": "monetary", "phrase": "spent {monetary_365d:,.2f} in the last year"},
        "frequency_90d": {"group": "frequency", "phrase": "{frequency_90d:.0f} purchases in 90 days"},
        "plan": {"group": "attribute", "phrase": "plan is {plan}"},
    }
    for i in range(n_numeric - 5):
        dictionary[f"x{i:02d}"] = {"group": "mix", "phrase": f"signal {i} is {{x{i:02d}:.2f}}"}
    if flags:
        dictionary["active"] = {"group": "attribute", "phrase": "is active member: {active:yes/no}"}
        dictionary["travel"] = {"group": "attribute", "phrase": "business travel is {travel}"}
    return frame, label, dictionary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=40, help="numeric features (plus one categorical)")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-reference", action="store_true", help="time only the fast path")
    parser.add_argument("--flags", action="store_true", help="add a 0/1 flag and an underscored category")
    args = parser.parse_args()

    train, label, dictionary = synthetic(20_000, args.features, args.seed, args.flags)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 5, "eta": 0.1, "nthread": 2, "seed": args.seed},
        xgb.DMatrix(train, label, enable_categorical=True),
        num_boost_round=args.trees,
    )
    frame, _, _ = synthetic(args.rows, args.features, args.seed + 1, args.flags)
    names = list(frame.columns)

    t0 = time.perf_counter()
    contrib = booster.predict(xgb.DMatrix(frame, enable_categorical=True), pred_contribs=True)
    t_contrib = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = top_reasons(contrib, frame, names, dictionary, k=3)
    t_fast = time.perf_counter() - t0
    print(f"rows={args.rows} features={len(names)} trees={args.trees}")
    print(f"xgboost pred_contribs:            {t_contrib:8.2f} s")
    print(f"top_reasons (vectorised phrases): {t_fast:8.2f} s")
    print(f"fast path total:                  {t_contrib + t_fast:8.2f} s")
    if args.skip_reference:
        return
    t0 = time.perf_counter()
    ref = reasons_reference(booster, frame, frame, names, dictionary, k=3)
    t_ref = time.perf_counter() - t0
    print(f"reasons_reference (shap + rows):  {t_ref:8.2f} s")
    import shap

    t0 = time.perf_counter()
    shap.TreeExplainer(booster).shap_values(xgb.DMatrix(frame, enable_categorical=True))
    t_shap = time.perf_counter() - t0
    print(f"  of which shap TreeExplainer:    {t_shap:8.2f} s; per-row phrases {t_ref - t_shap:.2f} s")
    print(f"phrase step speed-up (per-row phrases / top_reasons): {(t_ref - t_shap) / t_fast:6.1f}x")
    print(f"speed-up (reference / fast total): {t_ref / (t_contrib + t_fast):6.1f}x")
    mismatch = (fast[ref.columns] != ref).any(axis=1)
    print(f"rows whose reasons differ: {int(mismatch.sum())} of {len(ref)}")
    if mismatch.any():
        print(pd.concat([fast[mismatch].head(3), ref[mismatch].head(3)]).T.to_string())


if __name__ == "__main__":
    main()
