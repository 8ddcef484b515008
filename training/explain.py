"""Global explanation (SHAP) and behavioural checks of a trained churn model.

SHAP values come from the bundle's ``contributions`` for every model family: XGBoost's own TreeSHAP
with the early-stopping iteration range for trees (equal to ``shap.TreeExplainer``'s values at the
same cost), the exact linear SHAP ``coef * (z - mean)`` summed over a feature's encoded columns
for the linear model, and their weighted sum for a blend; the shap package is used only to draw
them. Behavioural checks test what a retention lead expects of any
sensible model (more inactivity never lowers risk; personal data never matter) and are logged
with the run, so a model that learned something absurd is visible before it is promoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churnflow.features.settings import Settings
from churnflow.training.bundle import ModelBundle
from churnflow.training.churn_model import model_frame


@dataclass
class Explanation:
    values: pd.DataFrame
    """SHAP values (margin units), one column per feature, rows as the explained frame."""
    bias: float
    importance: pd.DataFrame
    """feature, mean_abs_shap, share; sorted, most important first."""
    plots: dict[str, Path] = field(default_factory=dict)


def shap_values(bundle: ModelBundle, features: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per-row contributions in margin units and the bias; rows sum to the model's margin."""
    contrib = bundle.contributions(features)
    values = pd.DataFrame(contrib[:, :-1], columns=bundle.schema.features, index=features.index)
    return values, float(contrib[0, -1]) if len(contrib) else 0.0


def importance_table(values: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per feature and its share of the total."""
    mean_abs = values.abs().mean().sort_values(ascending=False)
    total = mean_abs.sum()
    return pd.DataFrame(
        {
            "feature": mean_abs.index,
            "mean_abs_shap": mean_abs.to_numpy(),
            "share": (mean_abs / total).to_numpy() if total > 0 else np.zeros(len(mean_abs)),
        }
    ).reset_index(drop=True)


def plot_frame(bundle: ModelBundle, features: pd.DataFrame) -> pd.DataFrame:
    """Numeric view of the model frame for colouring SHAP plots (categories as level codes)."""
    frame = model_frame(features, bundle.schema.features, bundle.schema.categorical_levels)
    for col in bundle.schema.categorical:
        codes = frame[col].cat.codes.astype(np.float64)
        frame[col] = codes.where(codes >= 0)
    return frame.astype(np.float64)


def explain(
    bundle: ModelBundle,
    features: pd.DataFrame,
    plot_dir: Path | None = None,
    *,
    max_rows: int = 5000,
    seed: int = 42,
    top_dependence: int = 3,
) -> Explanation:
    """SHAP values on (a seeded sample of) ``features``, importance table and PNG plots."""
    sample = features.sample(n=max_rows, random_state=seed) if len(features) > max_rows else features
    values, bias = shap_values(bundle, sample)
    imp = importance_table(values)
    out = Explanation(values=values, bias=bias, importance=imp)
    if plot_dir is not None:
        out.plots = shap_plots(bundle, values, sample, Path(plot_dir), imp["feature"].head(top_dependence).tolist(),
                               seed=seed)
    return out


def shap_plots(
    bundle: ModelBundle, values: pd.DataFrame, features: pd.DataFrame, folder: Path, top: list[str], seed: int = 0
) -> dict[str, Path]:
    """Bar and beeswarm summaries plus dependence plots of the top features, from given values."""
    # shap draws on pyplot's current figure; the backend is chosen at the program's entry point
    # (headless machines fall back to Agg by themselves). Every figure is closed after saving.
    import matplotlib.pyplot as plt
    import shap

    folder.mkdir(parents=True, exist_ok=True)
    x = plot_frame(bundle, features)
    v = values.to_numpy()
    plots: dict[str, Path] = {}

    def save(name: str) -> None:
        path = folder / f"{name}.png"
        plt.gcf().savefig(path, dpi=100, bbox_inches="tight")
        plt.close("all")
        plots[name] = path

    # shap's beeswarm jitters points at random: its own seeded generator, never NumPy's global one
    shap.summary_plot(v, x, plot_type="bar", show=False, rng=np.random.default_rng(seed))
    save("shap_importance")
    shap.summary_plot(v, x, show=False, rng=np.random.default_rng(seed))
    save("shap_beeswarm")
    for name in top:
        shap.dependence_plot(name, v, x, interaction_index=None, show=False)
        save(f"shap_dependence_{name}")
    return plots


def behavioural_checks(
    bundle: ModelBundle, features: pd.DataFrame, settings: Settings, *, recency_shift_days: float = 60
) -> list[tuple[str, bool, str]]:
    """Checks any sensible churn model passes; returns (name, passed, detail) per check."""
    checks: list[tuple[str, bool, str]] = []
    base = bundle.predict_proba(features)
    finite = bool(np.all(np.isfinite(base)) and np.all((base >= 0) & (base <= 1)))
    checks.append(("probabilities_in_unit_interval", finite, f"min {base.min():.4f}, max {base.max():.4f}"))

    recency = bundle.schema.feature_for("recency")
    if recency is not None:
        shifted = features.copy()
        shifted[recency] = pd.to_numeric(shifted[recency], errors="coerce") + recency_shift_days
        after = bundle.predict_proba(shifted)
        ok = bool(after.mean() >= base.mean() - 1e-9)
        checks.append(
            (
                f"recency_plus_{recency_shift_days:g}d_does_not_lower_risk",
                ok,
                f"mean probability {base.mean():.4f} -> {after.mean():.4f}",
            )
        )
    else:
        checks.append(("recency_monotonic", True, "skipped: the data have no recency feature"))

    pii = [c for c in settings.pii_columns if c in bundle.schema.features]
    checks.append(
        ("pii_not_features", not pii, f"PII columns used as features: {pii}" if pii else "none of the PII columns is a feature")
    )
    # Invariance: overwriting/adding PII columns with arbitrary values must not move any prediction.
    noisy = features.copy()
    rng = np.random.default_rng(settings.training.seed)
    for col in settings.pii_columns:
        noisy[col] = [f"x{v}" for v in rng.integers(0, 1_000_000, len(noisy))]
    try:
        moved = float(np.max(np.abs(bundle.predict_proba(noisy) - base))) if len(base) else 0.0
        checks.append(("invariant_to_pii", moved == 0.0, f"max change {moved:.2e}"))
    except Exception as exc:  # a PII feature with a non-numeric dtype can fail to convert
        checks.append(("invariant_to_pii", False, f"scoring with altered PII failed: {exc}"))
    return checks
