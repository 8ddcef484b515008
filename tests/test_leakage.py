"""The cardinal sin: features at T must not change when anything dated on or after T changes.

Property-based: hypothesis draws a small customer base with events, contacts and churn dates
around an as-of date T, then rewrites the future arbitrarily. Features at T must be identical;
labels must only depend on the horizon [T, T + H).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from churnflow.features.build import build_features, infer_schema, with_btyd_fitted
from churnflow.features.contracts import Tables, cut_at, load_tables
from churnflow.features.labels import active_customers, churn_labels
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings

T = pd.Timestamp("2021-01-01")
H = 60
DAY_MIN = 1440
TYPES = ["buy", "view", "call"]
CAMPAIGNS = ["spring", "winback"]

SETTINGS = [
    Settings(data={"columns": {"churn_time": "churn_time", "event_type": "event_type"}, "contacts": "c.csv"},
             churn={"min_tenure_days": m}, features={"windows_days": w})
    for m, w in ((0, [30, 90, 365]), (30, [7, 60]))
]

HYPO = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# offsets in minutes relative to T; whole days are drawn often so that midnights and exact
# window boundaries (T - 30 days, T - 90 days, T itself, T + H) are hit
past = st.one_of(st.integers(-400 * DAY_MIN, -1), st.integers(-400, -1).map(lambda d: d * DAY_MIN))
future = st.one_of(st.just(0), st.integers(0, 200 * DAY_MIN), st.integers(0, 200).map(lambda d: d * DAY_MIN))
amounts = st.integers(0, 500).map(float)


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(3, 15))
    ids = list(range(1, n + 1))
    cust = st.sampled_from(ids)
    return {
        "ids": ids,
        "signup": draw(st.lists(st.one_of(st.none(), st.integers(-500, 10)), min_size=n, max_size=n)),
        "churn": draw(st.lists(st.one_of(st.none(), st.integers(-200, 200)), min_size=n, max_size=n)),
        "plan": draw(st.lists(st.sampled_from(["basic", "pro", "max"]), min_size=n, max_size=n)),
        "past_events": draw(st.lists(st.tuples(cust, past, amounts, st.sampled_from(TYPES)), max_size=40)),
        "future_events": draw(st.lists(st.tuples(cust, future, amounts, st.sampled_from(TYPES)), max_size=20)),
        "past_contacts": draw(st.lists(st.tuples(cust, past, st.sampled_from(CAMPAIGNS)), max_size=10)),
        "future_contacts": draw(st.lists(st.tuples(cust, future, st.sampled_from(CAMPAIGNS)), max_size=10)),
        "settings": draw(st.sampled_from(range(len(SETTINGS)))),
    }


@st.composite
def futures(draw: st.DrawFn, world: dict[str, Any]) -> dict[str, Any]:
    """A different future: events, contacts and churn dates on or after T, all rewritten."""
    cust = st.sampled_from(world["ids"])
    churn = [
        c if c is not None and c < 0 else draw(st.one_of(st.none(), st.integers(0, 200)))
        for c in world["churn"]
    ]
    return world | {
        "future_events": draw(st.lists(st.tuples(cust, future, amounts, st.sampled_from(TYPES + ["refund"])),
                                       max_size=20)),
        "future_contacts": draw(st.lists(st.tuples(cust, future, st.sampled_from(CAMPAIGNS)), max_size=10)),
        "churn": churn,
    }


def _times(minutes: list[int]) -> pd.Series:
    return pd.Series(T + pd.to_timedelta(np.asarray(minutes, dtype="int64"), unit="min")).astype("datetime64[ns]")


def _days(days: list[int | None]) -> pd.Series:
    return pd.Series([T + pd.Timedelta(days=d) if d is not None else pd.NaT for d in days]).astype("datetime64[ns]")


def to_tables(w: dict[str, Any], events: list[tuple[Any, ...]] | None = None) -> Tables:
    cu = pd.DataFrame({"customer_id": w["ids"], "signup_time": _days(w["signup"]),
                       "churn_time": _days(w["churn"]), "plan": w["plan"]})
    rows = events if events is not None else w["past_events"] + w["future_events"]
    ev = pd.DataFrame({
        "customer_id": pd.Series([r[0] for r in rows], dtype="int64"),
        "event_time": _times([r[1] for r in rows]),
        "amount": pd.Series([r[2] for r in rows], dtype="float64"),
        # category, as validate_tables produces since dd406bb (features must not care)
        "event_type": pd.Series([r[3] for r in rows], dtype=object).astype(str).astype("category"),
    })
    crow = w["past_contacts"] + w["future_contacts"]
    co = pd.DataFrame({
        "customer_id": pd.Series([r[0] for r in crow], dtype="int64"),
        "contact_time": _times([r[1] for r in crow]),
        "campaign": pd.Series([r[2] for r in crow], dtype=object).astype(str),
    })
    return Tables(customers=cu, events=ev, contacts=co, end_date=T + pd.Timedelta(days=400))


def _features(tables: Tables, s: Settings, schema: Any) -> pd.DataFrame:
    return build_features(tables, T, s, schema)


# ---- features -------------------------------------------------------------------------------------


@HYPO
@given(data=st.data())
def test_features_ignore_the_future(data: st.DataObject) -> None:
    w = data.draw(worlds())
    s = SETTINGS[w["settings"]]
    tables = to_tables(w)
    schema = infer_schema(tables, s)  # decided once, as at training time
    before = _features(tables, s, schema)

    other = data.draw(futures(w))
    after = _features(to_tables(other), s, schema)
    pd.testing.assert_frame_equal(before, after)

    # the future removed altogether (what load_tables(as_of=T) does): same features
    pd.testing.assert_frame_equal(before, _features(cut_at(tables, T), s, schema))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_past_changes_do_change_features(data: st.DataObject) -> None:
    """Guards the property above against a vacuous build: the past does matter."""
    w = data.draw(worlds())
    s = SETTINGS[w["settings"]]
    tables = to_tables(w)
    members = list(active_customers(tables, T, s.churn.min_tenure_days))
    assume(members)
    who = data.draw(st.sampled_from(members))
    extra = to_tables(w, w["past_events"] + w["future_events"] + [(who, -1, 10.0, "buy")])
    schema = infer_schema(extra, s)
    a = _features(tables, s, schema).set_index("customer_id")
    b = _features(extra, s, schema).set_index("customer_id")
    assert b.loc[who, "events_total"] == a.loc[who, "events_total"] + 1
    assert b.loc[who, "recency_days"] == pytest.approx(1 / DAY_MIN)


# ---- BG/NBD: a population-level fit, so its parameters must be point in time too ----------------

BTYD = ["p_alive", "expected_active_days"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_btyd_features_ignore_the_future(data: st.DataObject) -> None:
    """The schema's BG/NBD parameters were fitted on everything (future included); features at
    an earlier T must come from a fit on the rows before T only."""
    w = data.draw(worlds())
    s = SETTINGS[w["settings"]]
    tables = to_tables(w)
    schema = infer_schema(tables, s)
    assume(schema.has_events)
    assert pd.Timestamp(schema.btyd["as_of"]) > T and set(BTYD) <= set(schema.features)
    before = _features(tables, s, schema)[BTYD]
    assume(before["p_alive"].notna().any())
    after = _features(to_tables(data.draw(futures(w))), s, schema)[BTYD]
    pd.testing.assert_frame_equal(before, after)
    at_t = with_btyd_fitted(cut_at(tables, T), T, s, schema)  # the fit a model trained at T stores
    pd.testing.assert_frame_equal(before, _features(tables, s, at_t)[BTYD])


def test_btyd_parameters_fitted_later_would_move_the_features() -> None:
    """Guards the property above against a vacuous pass: on CDNOW, the parameters fitted on all
    18 months (the schema's, for scoring), applied at 1997-10-01, would change the features; the
    refit on the rows before that date is what keeps them clean."""
    from churnflow.features.settings import load_settings
    from tests.conftest import REPO

    s = load_settings(REPO / "configs" / "cdnow.toml")
    tables = load_tables(s)
    t = pd.Timestamp("1997-10-01")
    schema = infer_schema(tables, s)
    clean = build_features(tables, t, s, schema)[BTYD]
    at_t = with_btyd_fitted(cut_at(tables, t), t, s, schema)
    pd.testing.assert_frame_equal(clean, build_features(tables, t, s, at_t)[BTYD])
    leaky = FeatureSchema(**(schema.to_dict() | {"btyd": schema.btyd | {"as_of": t.isoformat()}}))
    moved = (build_features(tables, t, s, leaky)[BTYD] - clean).abs().max()
    assert (moved > 0.01).all(), moved.to_dict()


# ---- labels ---------------------------------------------------------------------------------------


@HYPO
@given(data=st.data())
def test_labels_only_see_the_horizon(data: st.DataObject) -> None:
    w = data.draw(worlds())
    ids = pd.Index(w["ids"])
    tables = to_tables(w)
    base_inactive = churn_labels(tables, T, H, "inactivity", ids)
    base_explicit = churn_labels(tables, T, H, "explicit", ids)

    horizon = [e for e in w["future_events"] if e[1] < H * DAY_MIN]
    cust = st.sampled_from(w["ids"])
    late = st.one_of(st.just(H * DAY_MIN), st.integers(H * DAY_MIN, 300 * DAY_MIN))
    new_past = data.draw(st.lists(st.tuples(cust, past, amounts, st.sampled_from(TYPES)), max_size=40))
    new_late = data.draw(st.lists(st.tuples(cust, late, amounts, st.sampled_from(TYPES)), max_size=20))
    churn = [
        c if c is not None and 0 <= c < H else data.draw(st.one_of(st.none(), st.integers(-300, -1),
                                                                   st.integers(H, 300)))
        for c in w["churn"]
    ]
    changed = to_tables(w | {"churn": churn}, new_past + horizon + new_late)
    pd.testing.assert_series_equal(churn_labels(changed, T, H, "inactivity", ids), base_inactive)
    pd.testing.assert_series_equal(churn_labels(changed, T, H, "explicit", ids), base_explicit)


@HYPO
@given(data=st.data())
def test_one_event_in_the_horizon_flips_the_label(data: st.DataObject) -> None:
    w = data.draw(worlds())
    ids = pd.Index(w["ids"])
    tables = to_tables(w)
    labels = churn_labels(tables, T, H, "inactivity", ids)
    churned = labels.index[labels == 1].tolist()
    assume(churned)
    who = data.draw(st.sampled_from(churned))
    when = data.draw(st.one_of(st.just(0), st.just(H * DAY_MIN - 1), st.integers(0, H * DAY_MIN - 1)))
    rows = w["past_events"] + w["future_events"] + [(who, when, 1.0, "buy")]
    flipped = churn_labels(to_tables(w, rows), T, H, "inactivity", ids)
    assert flipped[who] == 0
    pd.testing.assert_series_equal(flipped.drop(who), labels.drop(who))


# ---- deterministic edge: an event exactly at T ----------------------------------------------------


def test_event_exactly_at_midnight_t_is_label_not_feature() -> None:
    s = Settings()
    cu = pd.DataFrame({"customer_id": [1, 2], "signup_time": pd.to_datetime(["2020-01-01", "2020-01-01"])})
    ev = pd.DataFrame({
        "customer_id": [1, 2, 1],
        "event_time": pd.to_datetime(["2020-12-01", "2020-12-01", "2021-01-01 00:00:00"], format="ISO8601").astype(
            "datetime64[ns]"),
        "amount": [5.0, 5.0, 100.0],
    })
    tables = Tables(customers=cu, events=ev, contacts=None, end_date=pd.Timestamp("2021-06-30"))
    schema = infer_schema(tables, s)
    f = build_features(tables, T, s, schema).set_index("customer_id")
    assert f.loc[1, "events_total"] == 1
    assert f.loc[1, "monetary_total"] == 5.0
    assert f.loc[1, "recency_days"] == 31.0
    pd.testing.assert_series_equal(f.loc[1], f.loc[2], check_names=False)
    labels = churn_labels(tables, T, 90, "inactivity", pd.Index([1, 2]))
    assert labels.to_dict() == {1: 0, 2: 1}
    # one nanosecond earlier it is history, not horizon
    ev.loc[2, "event_time"] = T - pd.Timedelta(1, "ns")
    f2 = build_features(tables, T, s, schema).set_index("customer_id")
    assert f2.loc[1, "events_total"] == 2
    assert churn_labels(tables, T, 90, "inactivity", pd.Index([1, 2])).to_dict() == {1: 1, 2: 1}


def _write_csv_world(tmp_path: Path) -> Settings:
    cu = pd.DataFrame({
        "customer_id": [1, 2, 3, 4],
        "signup_time": ["2020-01-01", "2020-03-01", "2020-06-01", "2021-01-01"],
        "cancelled": ["", "2021-01-20", "2020-12-30", ""],  # 3 churned before T, 2 after
        "plan": ["a", "b", "a", "b"],
    })
    ev = pd.DataFrame({
        "customer_id": [1, 1, 2, 2, 3, 4, 1, 2],
        "event_time": ["2020-06-01", "2020-12-31 23:59", "2020-11-01", "2021-01-01", "2020-12-01",
                       "2021-01-02", "2021-02-01", "2021-01-01 00:00:01"],
        "amount": [10, 20, 30, 40, 50, 60, 70, 80],
        "event_type": ["buy", "view", "buy", "buy", "view", "buy", "refund", "view"],
    })
    co = pd.DataFrame({"customer_id": [1, 2, 1], "contact_time": ["2020-12-01", "2021-01-01", "2021-01-15"],
                       "campaign": ["x", "y", "x"]})
    cu.to_csv(tmp_path / "customers.csv", index=False)
    ev.to_csv(tmp_path / "events.csv", index=False)
    co.to_csv(tmp_path / "contacts.csv", index=False)
    s = Settings(data={"customers": str(tmp_path / "customers.csv"), "events": str(tmp_path / "events.csv"),
                       "contacts": str(tmp_path / "contacts.csv"),
                       "columns": {"churn_time": "cancelled", "event_type": "event_type"}})
    return s


def test_load_tables_as_of_gives_the_same_features(tmp_path: Path) -> None:
    s = _write_csv_world(tmp_path)
    full = load_tables(s)
    cut = load_tables(s, as_of=T)
    assert (cut.events["event_time"] < T).all() and (cut.contacts["contact_time"] < T).all()
    schema = infer_schema(full, s)
    from_full = build_features(full, T, s, schema)
    pd.testing.assert_frame_equal(from_full, build_features(cut, T, s, schema))
    assert from_full["customer_id"].tolist() == ["1", "2"]  # CSV ids are text, kept as written


def test_schema_from_cut_tables_knows_only_the_past(tmp_path: Path) -> None:
    s = _write_csv_world(tmp_path)
    full = load_tables(s)
    cut = load_tables(s, as_of=T)
    schema = infer_schema(full, s)
    from_full = build_features(full, T, s, schema)
    cut_schema = infer_schema(cut, s)
    assert "share_refund_365d" in schema.features and "share_refund_365d" not in cut_schema.features
    from_cut = build_features(cut, T, s, cut_schema)
    pd.testing.assert_frame_equal(from_cut, from_full[from_cut.columns])
