"""Pins the feature table byte for byte: a refactor of how features are declared must not move
any name, value or dtype. The expected digests were computed with the code before the feature
spec existed (commit 4d55f3d); a deliberate change to a feature updates them in the same commit.

The data are drawn here with a seeded generator (not features.demo, which may evolve) and cover
signup dates, event types, amounts, contacts, numbers stored as text and a categorical attribute.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from churnflow.features.build import build_features, infer_schema
from churnflow.features.contracts import Tables
from churnflow.features.settings import Settings

T = pd.Timestamp("2021-01-01")

DEFAULT_FEATURES = [
    "tenure_days", "recency_days", "events_total", "frequency_30d", "frequency_90d", "frequency_365d",
    "monetary_total", "avg_amount", "monetary_30d", "monetary_90d", "monetary_365d", "active_days_total",
    "gap_mean_days", "gap_std_days", "overdue_ratio", "trend_frequency", "trend_monetary", "share_buy_365d",
    "share_support_call_365d", "share_view_365d", "contacts_365d", "days_since_contact", "fee", "score", "plan",
]
SHORT_FEATURES = [
    "tenure_days", "recency_days", "events_total", "frequency_7d", "frequency_60d", "monetary_total",
    "avg_amount", "monetary_7d", "monetary_60d", "active_days_total", "gap_mean_days", "gap_std_days",
    "overdue_ratio", "trend_frequency", "trend_monetary", "share_buy_60d", "share_support_call_60d",
    "share_view_60d", "contacts_365d", "days_since_contact", "fee", "score", "plan",
]
PINNED = {
    "default": (DEFAULT_FEATURES, "6f094ea16fbe40c1e2e8f7a0f08c18d3514db8735064795ad28eca61f8fdda45"),
    "short_windows": (SHORT_FEATURES, "39e2e63a1f2a13cb11c3f69a48a551d108e2b58f6d6651b6dc0c2f3c71964dd3"),
}
"""Per settings: the features that existed before the spec, in order, and their table's digest."""


def seeded_world(n: int = 300, seed: int = 11) -> Tables:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    signup = T - pd.to_timedelta(rng.integers(1, 900, n), unit="D")
    signup = pd.Series(signup).where(rng.random(n) > 0.1)  # some without signup date
    customers = pd.DataFrame({
        "customer_id": ids,
        "signup_time": signup.astype("datetime64[ns]"),
        "plan": rng.choice(["basic", "plus", "premium"], n),
        "fee": [f"{v:,.2f}" if v > 5 else "" for v in rng.gamma(2.0, 500.0, n)],
        "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
    })
    m = n * 12
    events = pd.DataFrame({
        "customer_id": rng.integers(1, n + 1, m),
        "event_time": (T - pd.to_timedelta(rng.integers(-60 * 1440, 700 * 1440, m), unit="min")).astype("datetime64[ns]"),
        "amount": np.round(rng.lognormal(3.0, 1.0, m), 2),
        "event_type": pd.Categorical(rng.choice(["buy", "view", "support call"], m, p=[0.5, 0.4, 0.1])),
    }).sort_values(["customer_id", "event_time"], kind="stable", ignore_index=True)
    k = n * 2
    contacts = pd.DataFrame({
        "customer_id": rng.integers(1, n + 1, k),
        "contact_time": (T - pd.to_timedelta(rng.integers(-30, 500, k), unit="D")).astype("datetime64[ns]"),
        "campaign": rng.choice(["spring", "winback"], k),
    })
    return Tables(customers=customers, events=events, contacts=contacts, end_date=pd.Timestamp("2021-03-01"))


def _settings(name: str) -> Settings:
    windows = [30, 90, 365] if name == "default" else [7, 60]
    return Settings(data={"columns": {"event_type": "event_type"}, "contacts": "c.csv"},
                    features={"windows_days": windows, "max_category_levels": 5})


def table_digest(frame: pd.DataFrame) -> str:
    """Names, dtypes and every value (NaN-aware) of a feature table, as one SHA-256."""
    h = hashlib.sha256()
    for name in frame.columns:
        col = frame[name]
        h.update(f"{name}:{col.dtype}".encode())
        if isinstance(col.dtype, pd.CategoricalDtype):
            h.update(repr(list(col.cat.categories)).encode())
            h.update(np.asarray(col.cat.codes).tobytes())
        else:
            h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_feature_table_is_pinned(name: str) -> None:
    s = _settings(name)
    tables = seeded_world()
    schema = infer_schema(tables, s)
    feats = build_features(tables, T, s, schema)
    names, digest = PINNED[name]
    assert [f for f in schema.features if f in names] == names
    assert table_digest(feats[["customer_id", "as_of", *names]]) == digest
