"""Drift reference and population stability index (PSI) for features and the score.

At training time the distribution of every feature and of the score is summarised as bins
(quantile edges for numbers, level shares for categories, always with a bucket for missing
values) and saved with the model as ``reference.json``. Each weekly scoring run counts today's
customers into the same bins and reports the PSI per feature, so "the model looks odd this week"
can be traced to, e.g., an event feed that stopped (recency jumps) or a new plan name (unseen
category share grows).

Counting is separated from the PSI so a scoring run can count one partition of customers at a
time (``bin_counts`` per chunk, ``combine_counts``) and compute PSI once (``psi_from_counts``).
The reference is plain JSON (lists of floats and ints) so it travels with the model artifacts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

SCORE = "score"
"""Name under which the score's bins are stored and its PSI row is reported."""
MISSING = "__missing__"
UNSEEN = "__unseen__"
EPSILON = 1e-4
"""Floor for a bin share in the PSI: an empty bin would otherwise give log(0)."""
N_BINS = 10


def _numeric_edges(values: np.ndarray, n_bins: int) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])
    return [float(v) for v in np.unique(qs)]


def _numeric_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts per bin: (-inf, e1], (e1, e2], ..., (ek, inf), then missing (NaN)."""
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), x[~missing], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)
    return np.append(counts, int(missing.sum()))


def _categorical_counts(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Counts per level, then missing, then values not among the training levels."""
    s = values.astype(object)
    missing = s.isna().to_numpy()
    text = s[~missing].astype(str)
    counts = text.value_counts()
    per_level = np.array([int(counts.get(level, 0)) for level in levels], dtype=np.int64)
    unseen = int(len(text) - per_level.sum())
    return np.append(per_level, [int(missing.sum()), unseen])


def _spec_counts(spec: Mapping[str, Any], values: pd.Series | np.ndarray) -> np.ndarray:
    if spec["kind"] == "numeric":
        return _numeric_counts(pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64), spec["edges"])
    return _categorical_counts(pd.Series(values), spec["levels"])


def fit_reference(
    features: pd.DataFrame, score: np.ndarray | None, schema: Any, n_bins: int = N_BINS
) -> dict[str, Any]:
    """Bins and expected shares for every schema feature and the score (JSON-serialisable).

    Numeric: deduplicated quantile edges (``n_bins`` bins at most; a constant feature gets one
    edge and two bins) plus a missing bucket. Categorical: the schema's levels plus missing and
    unseen buckets. Fit on the training rows the model learnt from.
    """
    levels = dict(getattr(schema, "categorical_levels", {}) or {})
    names = list(getattr(schema, "features", features.columns))
    out: dict[str, Any] = {"version": 1, "n_bins": n_bins, "n_rows": len(features), "features": {}}
    for name in names:
        if name in levels:
            spec: dict[str, Any] = {"kind": "categorical", "levels": [str(v) for v in levels[name]]}
            spec["labels"] = [*spec["levels"], MISSING, UNSEEN]
        else:
            values = pd.to_numeric(features[name], errors="coerce").to_numpy(np.float64)
            spec = {"kind": "numeric", "edges": _numeric_edges(values, n_bins)}
        spec["expected"] = _shares(_spec_counts(spec, features[name]))
        out["features"][name] = spec
    if score is not None:
        s = np.asarray(score, dtype=np.float64)
        spec = {"kind": "numeric", "edges": _numeric_edges(s, n_bins)}
        spec["expected"] = _shares(_numeric_counts(s, spec["edges"]))
        out[SCORE] = spec
    return out


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def bin_counts(
    reference: Mapping[str, Any], features: pd.DataFrame, score: np.ndarray | None = None
) -> dict[str, list[int]]:
    """Counts of one partition of customers in the reference bins (feature -> counts).

    Features absent from ``features`` are left out (reported as ``missing`` by the PSI).
    """
    counts: dict[str, list[int]] = {}
    for name, spec in reference.get("features", {}).items():
        if name in features.columns:
            counts[name] = [int(c) for c in _spec_counts(spec, features[name])]
    if score is not None and SCORE in reference:
        counts[SCORE] = [int(c) for c in _numeric_counts(np.asarray(score, dtype=np.float64), reference[SCORE]["edges"])]
    return counts


def combine_counts(parts: Iterable[Mapping[str, list[int]]]) -> dict[str, list[int]]:
    """Add up per-partition counts (a feature missing from one partition is missing overall)."""
    total: dict[str, np.ndarray] = {}
    seen = 0
    present: dict[str, int] = {}
    for part in parts:
        seen += 1
        for name, c in part.items():
            arr = np.asarray(c, dtype=np.int64)
            total[name] = total[name] + arr if name in total else arr
            present[name] = present.get(name, 0) + 1
    return {name: [int(v) for v in arr] for name, arr in total.items() if present[name] == seen}


def psi(expected: np.ndarray | list[float], actual_counts: np.ndarray | list[int], epsilon: float = EPSILON) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins, shares floored at ``epsilon``."""
    e = np.clip(np.asarray(expected, dtype=np.float64), epsilon, None)
    counts = np.asarray(actual_counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    a = np.clip(counts / total, epsilon, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _status(value: float, warn: float, fail: float) -> str:
    if np.isnan(value):
        return "missing"
    if value >= fail:
        return "fail"
    return "warn" if value >= warn else "ok"


def psi_from_counts(
    reference: Mapping[str, Any],
    counts: Mapping[str, list[int]],
    warn: float = 0.1,
    fail: float = 0.25,
) -> pd.DataFrame:
    """PSI and status (ok / warn / fail; ``missing`` when a feature was not counted) per feature,
    the score last (as ``"score"``), in reference order."""
    rows = []
    specs = list(reference.get("features", {}).items())
    if SCORE in reference:
        specs.append((SCORE, reference[SCORE]))
    for name, spec in specs:
        value = psi(spec["expected"], counts[name]) if name in counts else float("nan")
        rows.append({"feature": name, "psi": value, "status": _status(value, warn, fail)})
    return pd.DataFrame(rows, columns=["feature", "psi", "status"])


def population_stability(
    reference: Mapping[str, Any],
    features: pd.DataFrame,
    score: np.ndarray | None = None,
    warn: float = 0.1,
    fail: float = 0.25,
) -> pd.DataFrame:
    """PSI of today's customers against the training reference, in one call.

    Thresholds default to ``ServingSettings.drift_warn_psi`` / ``drift_fail_psi`` defaults.
    """
    return psi_from_counts(reference, bin_counts(reference, features, score), warn, fail)
