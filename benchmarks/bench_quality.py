"""Benchmark: does churnflow rank customers at least as well as the simple models, on real data?

Two public data sets, every model scored on the same held-out rows:

- **CDNOW** (``data/cdnow``, ``configs/cdnow.toml``): an event log, out of time. churnflow trains
  with ``training.recipe.train_model``; scored is the model its evaluation reports, the one that
  never saw the test snapshot, beside the baselines that evaluation fitted on the same
  development rows (``Evaluation.scores``): recency, logistic regression on RFM and on all
  encoded features, a fixed shallow XGBoost (depth 3, 300 rounds, learning rate 0.05); plus
  BG/NBD (probability of no purchase in the horizon, fitted on the history before the test date).
- **CDNOW, full cohort** (``--only cdnow_full``; ``data/cdnow_full``, ``configs/cdnow_full.toml``:
  23,570 customers, test as of 1998-04-01, 91-day horizon, the issue's setting), as CDNOW above.
- **IBM HR attrition** (``data/attrition``, ``configs/attrition.toml``): a snapshot table with a
  churn flag. Repeated stratified 5-fold (3 repeats): on each training fold churnflow trains
  (its own internal splits included) and so do logistic regression and the shallow XGBoost; all
  are scored on the held-out fold.

Reported per model: ROC-AUC and PR-AUC (mean over folds) with a bootstrap 95 % interval
(held-out rows resampled within each fold, the fitted models fixed: it measures test-row noise,
not refit noise), the paired difference churnflow − model with its interval, log loss, and the
fold-to-fold standard deviation. Seeded and rerunnable; prints a table and writes JSON to
``benchmarks/results/`` (git-ignored). Run from the repository root:

    .venv/bin/python benchmarks/bench_quality.py                  # both data sets, a few minutes
    .venv/bin/python benchmarks/bench_quality.py --only attrition --repeats 1 --trials 5
    .venv/bin/python benchmarks/bench_quality.py --only attrition --candidates   # + each candidate

``--candidates`` (attrition) also refits, per outer fold, each candidate churnflow weighed (the
tuned tree alone, the linear model at every ``C``, blends at tree weights 0.25 / 0.5 / 0.75, the
chosen ``C``) on the same training fold and scores it on the held-out rows, beside what
churnflow chose: it shows whether a loss comes from the selection or from the candidates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's packages, not an installed copy
# OpenMP threads that spin while waiting make XGBoost ~50x slower on a busy machine (measured:
# a 300-round fit on 1,176 rows took 34 s instead of 0.4 s with 2 threads on 2 loaded cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import RepeatedStratifiedKFold  # noqa: E402

from churnflow.features import btyd  # noqa: E402
from churnflow.features.build import build_snapshots, infer_schema, snapshot_as_of  # noqa: E402
from churnflow.features.contracts import Tables, load_tables  # noqa: E402
from churnflow.features.schema import FeatureSchema  # noqa: E402
from churnflow.features.settings import Settings, load_settings  # noqa: E402
from churnflow.training.calibration import Calibrator  # noqa: E402
from churnflow.training.evaluate import RECENCY, SIMPLE_BASELINES, fit_simple_baseline  # noqa: E402
from churnflow.training.fit import fit_bundle  # noqa: E402
from churnflow.training.linear import C_GRID  # noqa: E402
from churnflow.training.recipe import train_model  # noqa: E402

CHURNFLOW = "churnflow"
EVENT_BASELINES = ("recency", "logistic_rfm", "logistic_all", "xgboost_shallow")
RESULTS = ROOT / "benchmarks" / "results"


# ---- metrics on many bootstrap samples at once -------------------------------------------------
def roc_auc_rows(label: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC of every row of (samples, n) arrays: Mann-Whitney U with average ranks for ties."""
    ranks = rankdata(score, axis=1)
    pos = label.sum(axis=1)
    neg = label.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * label).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg)


def average_precision_rows(label: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Average precision of every row, tied scores forming one threshold (as scikit-learn does)."""
    n = label.shape[1]
    order = np.argsort(-score, axis=1, kind="stable")
    y = np.take_along_axis(label, order, axis=1)
    s = np.take_along_axis(score, order, axis=1)
    precision = np.cumsum(y, axis=1) / np.arange(1, n + 1)
    is_group_end = np.ones_like(s, dtype=bool)
    is_group_end[:, :-1] = s[:, :-1] != s[:, 1:]
    end_index = np.where(is_group_end, np.arange(n), n)
    group_end = np.minimum.accumulate(end_index[:, ::-1], axis=1)[:, ::-1]
    precision_at_group_end = np.take_along_axis(precision, group_end, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (y * precision_at_group_end).sum(axis=1) / y.sum(axis=1)


METRICS = {"roc_auc": roc_auc_rows, "pr_auc": average_precision_rows}


@dataclass
class Folds:
    """Held-out labels and every model's scores, fold by fold (one fold for out-of-time data)."""

    labels: list[np.ndarray] = field(default_factory=list)
    scores: list[dict[str, np.ndarray]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    families: list[str] = field(default_factory=list)
    """The candidate churnflow registered in each fold (tree, linear, blend)."""
    calibrations: list[str] = field(default_factory=list)
    """The calibration map churnflow chose in each fold (identity, sigmoid, beta, isotonic)."""
    candidates: list[dict[str, float]] = field(default_factory=list)
    """``--candidates``: held-out ROC-AUC of every candidate refitted on the training fold."""

    def add(self, label: np.ndarray, scores: dict[str, np.ndarray]) -> None:
        self.labels.append(np.asarray(label, dtype=np.int8))
        self.scores.append({k: np.asarray(v, dtype=np.float64) for k, v in scores.items()})


def summarise(folds: Folds, n_boot: int, seed: int) -> dict[str, dict[str, object]]:
    """Per model: fold-mean metric, bootstrap 95 % interval, paired churnflow − model difference."""
    rng = np.random.default_rng(seed)
    models = list(folds.scores[0])
    point = {m: {k: [] for k in METRICS} for m in models}
    boot = {m: {k: np.zeros(n_boot) for k in METRICS} for m in models}
    for label, scores in zip(folds.labels, folds.scores, strict=True):
        idx = rng.integers(0, len(label), size=(n_boot, len(label)))  # same rows for every model
        for m in models:
            for k, metric in METRICS.items():
                point[m][k].append(float(metric(label[None, :], scores[m][None, :])[0]))
                boot[m][k] += metric(label[idx], scores[m][idx]) / len(folds.labels)
    out: dict[str, dict[str, object]] = {}
    for m in models:
        row: dict[str, object] = {}
        for k in METRICS:
            row[k] = float(np.mean(point[m][k]))
            row[f"{k}_ci"] = [float(v) for v in np.nanpercentile(boot[m][k], [2.5, 97.5])]
            row[f"{k}_fold_sd"] = float(np.std(point[m][k], ddof=1)) if len(point[m][k]) > 1 else 0.0
            diff = boot[CHURNFLOW][k] - boot[m][k]
            row[f"{k}_churnflow_minus"] = float(np.mean(point[CHURNFLOW][k]) - row[k])
            row[f"{k}_churnflow_minus_ci"] = [float(v) for v in np.nanpercentile(diff, [2.5, 97.5])]
        probabilities = [s[m] for s in folds.scores]
        if all(np.all((p >= 0) & (p <= 1)) for p in probabilities):
            row["log_loss"] = float(np.mean([
                log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])
                for y, p in zip(folds.labels, probabilities, strict=True)
            ]))
        row["seconds"] = folds.seconds.get(m, float("nan"))
        out[m] = row
    return out


# ---- BG/NBD (Fader, Hardie & Lee 2005), fitted on the history before the test date -------------
def bgnbd_churn_probability(frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """P(no purchase in the next ``horizon_days``) = 1 − P(alive)·(1 − P(no purchase | alive)).

    Fitted with ``features.btyd`` (tested on the published CDNOW parameters) on the point-in-time
    RFM summary of the test rows: repeat purchase-days ``x``, first-to-last ``t_x`` and age ``T``
    in weeks. Given alive, purchases are Poisson with a gamma(r + x, α + T) rate, so none in the
    horizon has probability ((α + T) / (α + T + h))^(r + x).
    """
    x = frame["active_days_total"].to_numpy(np.float64) - 1
    age = (frame["tenure_days"].to_numpy(np.float64) - 1) / 7
    t_x = (frame["tenure_days"].to_numpy(np.float64) - frame[RECENCY].to_numpy(np.float64)) / 7
    params = btyd.fit_bgnbd(x, t_x, age)  # all customers, deterministic
    alive = btyd.p_alive(params, x, t_x, age)
    r, alpha = params["r"], params["alpha"]
    silent_if_alive = ((alpha + age) / (alpha + age + horizon_days / 7)) ** (r + x)
    return 1.0 - alive * (1.0 - silent_if_alive)


# ---- the two data sets ---------------------------------------------------------------------------
def bench_settings(config: Path, work: Path, name: str, args: argparse.Namespace) -> Settings:
    """The data set's own settings with a small trial budget and a fresh study in ``work``."""
    return load_settings(config, training={
        "n_trials": args.trials, "timeout_seconds": args.timeout, "seed": args.seed,
        "storage": f"sqlite:///{work / 'optuna.db'}", "study_name": f"bench-quality-{name}",
    }, tracking={"uri": f"sqlite:///{work / 'mlflow.db'}", "artifact_location": str(work / "artifacts")})


def simple_model_scores(train: pd.DataFrame, test: pd.DataFrame, schema: FeatureSchema,
                        settings: Settings, folds: Folds) -> dict[str, np.ndarray]:
    """Logistic regression on all encoded features and the shallow XGBoost, as churnflow's
    evaluation fits them (``training.evaluate.fit_simple_baseline``)."""
    scores = {}
    for name in SIMPLE_BASELINES:
        start = time.perf_counter()
        scores[name] = fit_simple_baseline(name, train, schema, settings).predict_proba(test)
        folds.seconds[name] = folds.seconds.get(name, 0.0) + time.perf_counter() - start
    return scores


def record_choices(folds: Folds, trained: object) -> None:
    """Which candidate family and which calibration map the trained model ended up with."""
    folds.families.append(getattr(getattr(trained, "choice", None), "family", "tree"))
    folds.calibrations.append(trained.bundle.calibrator.method)


def candidate_scores(trained: object, rows: pd.DataFrame, held_out: pd.DataFrame) -> dict[str, float]:
    """Held-out ROC-AUC of each candidate churnflow weighed, refitted on the whole training fold."""
    choice, tuned = trained.choice, trained.tuning
    base = replace(choice, tree_params=dict(tuned.best_params), n_rounds=tuned.best_iteration + 1)
    label = held_out["label"].to_numpy()[None, :]
    specs = {"tree": replace(base, tree_weight=1.0)}
    specs |= {f"linear_C{c:g}": replace(base, tree_weight=0.0, linear_c=c) for c in C_GRID}
    c = choice.linear_c or 1.0
    specs |= {f"blend_{w:.2f}": replace(base, tree_weight=w, linear_c=c) for w in (0.75, 0.5, 0.25)}
    out = {"chosen_tree_weight": choice.tree_weight, "chosen_C": choice.linear_c}
    for name, spec in specs.items():
        score = fit_bundle(rows, trained.bundle.schema, spec, Calibrator(method="identity")).predict_proba(held_out)
        out[name] = float(roc_auc_rows(label, score[None, :])[0])
    return out


def bench_cdnow(args: argparse.Namespace, work: Path, name: str = "cdnow") -> Folds:
    """churnflow's own out-of-time evaluation: the model that never saw the test rows and the
    baselines ``training.evaluate`` fitted on the same development rows, plus BG/NBD."""
    settings = bench_settings(ROOT / "configs" / f"{name}.toml", work, name, args)
    tables = load_tables(settings)
    folds = Folds()
    start = time.perf_counter()
    trained = train_model(tables, settings)
    folds.seconds[CHURNFLOW] = time.perf_counter() - start
    test, evaluated = trained.test, trained.evaluation.scores
    scores = {CHURNFLOW: evaluated["model"]}
    scores |= {name: evaluated[name] for name in EVENT_BASELINES if name in evaluated}
    scores["bgnbd"] = bgnbd_churn_probability(test, settings.churn.horizon_days)
    folds.add(test["label"].to_numpy(), scores)
    record_choices(folds, trained)
    print(f"{name}: test as-of {trained.plan.test.date()}, {len(test)} test rows, churn rate "
          f"{test['label'].mean():.3f}; churnflow trained in {folds.seconds[CHURNFLOW]:.1f} s", flush=True)
    return folds


def bench_attrition(args: argparse.Namespace, work: Path) -> Folds:
    config = ROOT / "configs" / "attrition.toml"
    tables = load_tables(load_settings(config))
    customers = tables.customers.reset_index(drop=True)
    as_of = snapshot_as_of(tables)
    splitter = RepeatedStratifiedKFold(n_splits=args.folds, n_repeats=args.repeats, random_state=args.seed)
    folds = Folds()
    for i, (train_rows, test_rows) in enumerate(splitter.split(customers, customers["label"])):
        settings = bench_settings(config, work, f"attrition-{i}", args)
        train_tables = Tables(customers=customers.iloc[train_rows], events=None, contacts=None,
                              end_date=tables.end_date)
        test_tables = Tables(customers=customers.iloc[test_rows], events=None, contacts=None,
                             end_date=tables.end_date)
        start = time.perf_counter()
        trained = train_model(train_tables, settings)
        folds.seconds[CHURNFLOW] = folds.seconds.get(CHURNFLOW, 0.0) + time.perf_counter() - start
        held_out = build_snapshots(test_tables, [as_of], settings, trained.bundle.schema)
        schema = infer_schema(train_tables, settings)  # the baselines' own, from the training fold
        train = build_snapshots(train_tables, [as_of], settings, schema)
        test = build_snapshots(test_tables, [as_of], settings, schema)
        assert (held_out["customer_id"].to_numpy() == test["customer_id"].to_numpy()).all()
        scores = {CHURNFLOW: trained.bundle.predict_proba(held_out)}
        folds.add(test["label"].to_numpy(), scores | simple_model_scores(train, test, schema, settings, folds))
        record_choices(folds, trained)
        if args.candidates:
            rows = build_snapshots(train_tables, [as_of], settings, trained.bundle.schema)
            folds.candidates.append(candidate_scores(trained, rows, held_out))
            print("  candidates:", {k: round(v, 4) for k, v in folds.candidates[-1].items()}, flush=True)
        print(f"attrition fold {i + 1}/{args.folds * args.repeats}: "
              + ", ".join(f"{m} {roc_auc_rows(folds.labels[-1][None], s[None])[0]:.3f}"
                          for m, s in folds.scores[-1].items()), flush=True)
    return folds


# ---- report ------------------------------------------------------------------------------------
def print_table(name: str, summary: dict[str, dict[str, object]]) -> None:
    print(f"\n{name}: mean over folds [bootstrap 95 % interval]; Δ = churnflow − model [interval]")
    print(f"{'model':<16} {'ROC-AUC':>24} {'Δ ROC-AUC':>26} {'PR-AUC':>24} {'Δ PR-AUC':>26} {'log loss':>9}")
    for model, row in summary.items():
        cells = []
        for k in METRICS:
            lo, hi = row[f"{k}_ci"]
            cells.append(f"{row[k]:.4f} [{lo:.4f}, {hi:.4f}]")
            if model == CHURNFLOW:
                cells.append("")
            else:
                dlo, dhi = row[f"{k}_churnflow_minus_ci"]
                cells.append(f"{row[f'{k}_churnflow_minus']:+.4f} [{dlo:+.4f}, {dhi:+.4f}]")
        loss = row.get("log_loss")
        print(f"{model:<16} {cells[0]:>24} {cells[1]:>26} {cells[2]:>24} {cells[3]:>26} "
              f"{'' if loss is None else f'{loss:.4f}':>9}")
    best = max((m for m in summary if m != CHURNFLOW), key=lambda m: summary[m]["roc_auc"])
    diff, (lo, hi) = summary[best]["roc_auc_churnflow_minus"], summary[best]["roc_auc_churnflow_minus_ci"]
    verdict = "better than" if lo > 0 else "WORSE than" if hi < 0 else "statistically tied with"
    print(f"→ churnflow is {verdict} the best simple model ({best}) on ROC-AUC: "
          f"Δ {diff:+.4f} [{lo:+.4f}, {hi:+.4f}]; at least as good on the point estimate: {diff >= 0}")


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=["cdnow", "attrition", "cdnow_full"], default=["cdnow", "attrition"],
                        help="data sets (cdnow_full: the whole CDNOW cohort, 23,570 customers, as of 1998-04-01)")
    parser.add_argument("--trials", type=int, default=10, help="Optuna trials per churnflow training")
    parser.add_argument("--timeout", type=float, default=60.0, help="tuning budget (s) per churnflow training")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--candidates", action="store_true",
                        help="attrition: also score every candidate churnflow weighed on the held-out fold")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("training").setLevel(logging.ERROR)  # "BASELINE WINS" is this table's job
    warnings.filterwarnings("ignore", category=UserWarning)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runners = {"cdnow": bench_cdnow, "attrition": bench_attrition,
               "cdnow_full": lambda a, w: bench_cdnow(a, w, "cdnow_full")}
    report: dict[str, object] = {"commit": git_commit(), "args": {k: str(v) for k, v in vars(args).items()}}
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix=f"bench-quality-{name}-") as tmp:
            started = time.perf_counter()
            folds = runners[name](args, Path(tmp))
            summary = summarise(folds, args.bootstrap, args.seed)
        print_table(name, summary)
        print(f"churnflow registered: {dict(Counter(folds.families))}; "
              f"calibration: {dict(Counter(folds.calibrations))}")
        if folds.candidates:
            print("candidates, held-out ROC-AUC (mean over folds):",
                  pd.DataFrame(folds.candidates).mean().round(4).to_dict())
        report[name] = {"models": summary, "n_folds": len(folds.labels), "families": folds.families,
                        "calibrations": folds.calibrations, "candidates": folds.candidates,
                        "n_rows": int(sum(len(y) for y in folds.labels)),
                        "wall_seconds": time.perf_counter() - started}
    out = args.out or RESULTS / f"quality-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
