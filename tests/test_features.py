"""Hand-made cases with exact expected numbers for labels, membership and every main feature."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnflow.features.build import (
    build_features,
    build_snapshots,
    infer_schema,
    snapshot_as_of,
    with_btyd_fitted,
)
from churnflow.features.contracts import Tables, validate_tables
from churnflow.features.labels import active_customers, check_label_window, churn_labels
from churnflow.features.settings import Settings

T = pd.Timestamp("2021-01-01")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def _tables(customers: dict[str, list[Any]], events: list[tuple[Any, str, float, str]] | None,
            contacts: list[tuple[Any, str, str]] | None = None, end: str = "2021-06-30") -> Tables:
    """Canonical tables built directly (validation is tested in test_contracts)."""
    cu = pd.DataFrame(customers)
    for col in ("signup_time", "churn_time"):
        if col in cu:
            cu[col] = pd.to_datetime(cu[col], format="ISO8601").astype("datetime64[ns]")
    ev = None
    if events is not None:
        ev = pd.DataFrame(events, columns=["customer_id", "event_time", "amount", "event_type"])
        ev["event_time"] = pd.to_datetime(ev["event_time"], format="ISO8601").astype("datetime64[ns]")
        ev["amount"] = ev["amount"].astype("float64")
    co = None
    if contacts is not None:
        co = pd.DataFrame(contacts, columns=["customer_id", "contact_time", "campaign"])
        co["contact_time"] = pd.to_datetime(co["contact_time"], format="ISO8601").astype("datetime64[ns]")
    return Tables(customers=cu, events=ev, contacts=co, end_date=pd.Timestamp(end))


# ---- the main hand-made data set ------------------------------------------------------------------

EVENTS = [
    # customer 1: signed up 2020-01-01; all events at daytime so calendar days are unambiguous
    (1, "2020-12-21 12:00", 20, "buy"),   # age 10.5
    (1, "2020-12-21 18:00", 30, "view"),  # age 10.25, same calendar day as above
    (1, "2020-12-11 12:00", 10, "buy"),   # age 20.5
    (1, "2020-11-01 12:00", 40, "buy"),   # age 60.5
    (1, "2020-06-01 12:00", 100, "view"),  # age 213.5
    (1, "2021-01-01 00:00", 999, "buy"),  # exactly at T: never seen by features
    (1, "2021-02-01 12:00", 999, "buy"),  # after T
    # customer 2: window boundaries, all at midnight
    (2, "2020-12-02", 1, "buy"),   # exactly 30 days before T -> inside the 30-day window
    (2, "2020-12-01", 2, "buy"),   # 31 days -> outside 30, inside 90
    (2, "2020-10-03", 4, "view"),  # exactly 90 days -> inside 90
    (2, "2020-10-02", 8, "view"),  # 91 days -> outside 90, inside 365
    # customer 3: no signup date, one event: tenure from the first event
    (3, "2020-07-01 12:00", 5, "buy"),  # age 183.5
    # customer 7: an event before the signup date
    (7, "2020-11-01 12:00", 3, "buy"),  # age 60.5, signup only 31 days before T
    # customer 5 (not yet signed up) and 6 (already churned) have events too
    (5, "2020-12-15 12:00", 1, "buy"),
    (6, "2020-12-15 12:00", 1, "buy"),
]

CUSTOMERS: dict[str, list[Any]] = {
    "customer_id": [1, 2, 3, 4, 5, 6, 7],
    "signup_time": ["2020-01-01", "2020-06-01", None, "2020-12-31", "2021-01-01", "2020-01-01", "2020-12-01"],
    "churn_time": [None, "2021-01-01", None, None, None, "2020-12-31", None],
    "plan": ["basic", "pro", "basic", "pro", "basic", "basic", "max"],
    "fee": ["1,200", " 3 450 ", "", "99", "5", "5", "12.5"],
    "notes": ["called twice", "vip", "moved", "new", "n/a", "left", "promo"],
    "account_no": [1001, 1002, 1003, 1004, 1005, 1006, 1007],
    "email": ["a@x", "b@x", "c@x", "d@x", "e@x", "f@x", "g@x"],
    "status": ["active", "cancelled", "active", "active", "active", "cancelled", "active"],
    "country": ["nl"] * 7,
    "score": [0.5, 0.7, np.nan, 1.0, 0.2, 0.3, 0.9],
}

CONTACTS = [
    (1, "2020-12-27", "spring"),   # 5 days before T
    (1, "2020-01-02", "winter"),   # exactly 365 days -> inside
    (1, "2020-01-01", "winter"),   # 366 days -> outside
    (1, "2021-01-01", "winback"),  # at T: not seen
    (2, "2021-02-01", "winback"),  # after T only
]


def _settings(**over: Any) -> Settings:
    base: dict[str, Any] = {
        "data": {"columns": {"churn_time": "churn_time", "event_type": "event_type"}, "contacts": "c.csv"},
        "features": {"max_category_levels": 3, "exclude": ["status"]},
    }
    for k, v in over.items():
        base[k] = base.get(k, {}) | v
    return Settings(**base)


@pytest.fixture(scope="module")
def main() -> tuple[Tables, Settings, pd.DataFrame, Any]:
    tables = _tables(CUSTOMERS, EVENTS, CONTACTS)
    s = _settings()
    schema = infer_schema(tables, s)
    feats = build_features(tables, T, s, schema).set_index("customer_id")
    return tables, s, feats, schema


# ---- membership ------------------------------------------------------------------------------------


def test_membership_exclusions(main: Any) -> None:
    _, _, feats, _ = main
    # 5 signs up on T (not before), 6 churned the day before T; 2 churns on T and is still in
    assert sorted(feats.index) == [1, 2, 3, 4, 7]


def test_min_tenure_days_excludes_short_tenure(main: Any) -> None:
    tables = main[0]
    # membership tenure counts from the signup date (7 signed up exactly 31 days before T)
    assert list(active_customers(tables, T, min_tenure_days=31)) == [1, 2, 3, 7]
    assert list(active_customers(tables, T, min_tenure_days=32)) == [1, 2, 3]
    # without a signup date it counts from the first event before T (3: 183.5 days)
    assert list(active_customers(tables, T, min_tenure_days=183)) == [1, 2, 3]
    s = _settings(churn={"min_tenure_days": 184})
    schema = infer_schema(tables, s)
    assert list(build_features(tables, T, s, schema)["customer_id"]) == [1, 2]


def test_customer_without_signup_and_without_history_is_excluded() -> None:
    tables = _tables({"customer_id": [1, 2], "signup_time": [None, None]},
                     [(1, "2020-12-01", 1.0, "a"), (2, "2021-01-05", 1.0, "a")])
    assert list(active_customers(tables, T)) == [1]


# ---- behaviour features ----------------------------------------------------------------------------


def test_recency_frequency_monetary_customer_1(main: Any) -> None:
    row = main[2].loc[1]
    assert row["recency_days"] == pytest.approx(10.25)
    assert row["events_total"] == 5
    assert (row["frequency_30d"], row["frequency_90d"], row["frequency_365d"]) == (3, 4, 5)
    assert row["monetary_total"] == pytest.approx(200.0)
    assert row["avg_amount"] == pytest.approx(40.0)
    assert (row["monetary_30d"], row["monetary_90d"], row["monetary_365d"]) == (60.0, 100.0, 200.0)
    assert row["tenure_days"] == pytest.approx(366.0)


def test_window_boundary_exactly_w_days_is_inside(main: Any) -> None:
    # build.py counts age <= w: an event exactly w days before T is inside the w-day window, so
    # the 30-day window covers the 30 calendar days T-30 .. T-1, matching "the last 30 days"
    row = main[2].loc[2]
    assert (row["frequency_30d"], row["frequency_90d"], row["frequency_365d"]) == (1, 3, 4)
    assert (row["monetary_30d"], row["monetary_90d"], row["monetary_365d"]) == (1.0, 7.0, 15.0)
    assert row["recency_days"] == 30.0


def test_rhythm_on_distinct_active_days(main: Any) -> None:
    row = main[2].loc[1]
    # calendar days 2020-12-21 (twice), 12-11, 11-01, 06-01 -> 4 active days, gaps 10, 40, 153
    assert row["active_days_total"] == 4
    gaps = np.array([10.0, 40.0, 153.0])
    assert row["gap_mean_days"] == pytest.approx(gaps.mean())
    assert row["gap_std_days"] == pytest.approx(gaps.std(ddof=1))
    assert row["overdue_ratio"] == pytest.approx(10.25 / gaps.mean())
    row2 = main[2].loc[2]
    assert row2["active_days_total"] == 4
    assert row2["gap_mean_days"] == pytest.approx(61 / 3)


def test_rhythm_needs_two_days(main: Any) -> None:
    feats = main[2]
    assert np.isnan(feats.loc[3, "gap_mean_days"])
    assert np.isnan(feats.loc[3, "gap_std_days"])
    assert np.isnan(feats.loc[3, "overdue_ratio"])


def test_gap_std_needs_three_days() -> None:
    tables = _tables({"customer_id": [1], "signup_time": ["2020-01-01"]},
                     [(1, "2020-12-01 08:00", 1, "a"), (1, "2020-12-11 08:00", 1, "a")])
    s = Settings()
    f = build_features(tables, T, s, infer_schema(tables, s)).iloc[0]
    assert f["gap_mean_days"] == 10.0
    assert np.isnan(f["gap_std_days"])


def test_midnight_and_daytime_events_on_the_same_day_count_once() -> None:
    tables = _tables({"customer_id": [1], "signup_time": ["2020-01-01"]},
                     [(1, "2020-12-02 00:00", 1, "a"), (1, "2020-12-02 10:00", 1, "a"),
                      (1, "2020-12-22 12:00", 1, "a")])
    s = Settings()
    f = build_features(tables, T, s, infer_schema(tables, s)).iloc[0]
    assert f["active_days_total"] == 2
    assert f["gap_mean_days"] == 20.0


def test_trend(main: Any) -> None:
    feats = main[2]
    # customer 1: 3 events in 30 days, 1 in the 60 days before -> (3/30) / (1/60) = 6
    assert feats.loc[1, "trend_frequency"] == pytest.approx(6.0)
    assert feats.loc[1, "trend_monetary"] == pytest.approx((60 / 30) / (40 / 60))
    # customer 2: 1 in 30 days, 2 in the 60 before -> (1/30) / (2/60) = 1
    assert feats.loc[2, "trend_frequency"] == pytest.approx(1.0)
    # no activity in the earlier window: undefined, not infinite
    assert np.isnan(feats.loc[3, "trend_frequency"])
    assert np.isnan(feats.loc[4, "trend_frequency"])


def test_event_type_shares(main: Any) -> None:
    feats, schema = main[2], main[3]
    assert schema.event_types == ["buy", "view"]
    assert feats.loc[1, "share_buy_365d"] == pytest.approx(0.6)
    assert feats.loc[1, "share_view_365d"] == pytest.approx(0.4)
    assert feats.loc[2, "share_view_365d"] == pytest.approx(0.5)
    assert feats.loc[3, "share_buy_365d"] == 1.0
    assert np.isnan(feats.loc[4, "share_buy_365d"])


def test_tenure(main: Any) -> None:
    feats = main[2]
    assert feats.loc[2, "tenure_days"] == 214.0  # signup 2020-06-01
    assert feats.loc[3, "tenure_days"] == pytest.approx(183.5)  # no signup: first event
    assert feats.loc[4, "tenure_days"] == 1.0


def test_tenure_feature_agrees_with_min_tenure_membership(main: Any) -> None:
    tables, _, feats, _ = main
    members = set(active_customers(tables, T, min_tenure_days=45))
    assert members == set(feats.index[feats["tenure_days"] >= 45])


def test_customer_without_events(main: Any) -> None:
    row = main[2].loc[4]
    assert np.isnan(row["recency_days"])
    assert row["events_total"] == 0 and row["frequency_365d"] == 0
    assert row["monetary_total"] == 0
    assert np.isnan(row["avg_amount"])
    assert row["active_days_total"] == 0


def test_contact_features(main: Any) -> None:
    feats = main[2]
    assert feats.loc[1, "contacts_365d"] == 2  # 5 and exactly 365 days; 366 days and T are out
    assert feats.loc[1, "days_since_contact"] == 5.0
    assert feats.loc[2, "contacts_365d"] == 0  # only contacted after T
    assert np.isnan(feats.loc[2, "days_since_contact"])


def test_feature_table_shape_and_dtypes(main: Any) -> None:
    tables, s, _, schema = main
    raw = build_features(tables, T, s, schema)
    assert list(raw.columns[:2]) == ["customer_id", "as_of"]
    assert list(raw.columns[2:]) == schema.features
    assert (raw["as_of"] == T).all()
    assert pd.api.types.is_datetime64_any_dtype(raw["as_of"])
    for name in schema.numeric:
        assert raw[name].dtype == "float64", name
    for name in schema.categorical:
        assert isinstance(raw[name].dtype, pd.CategoricalDtype), name


def test_as_of_is_normalised_to_midnight(main: Any) -> None:
    tables, s, feats, schema = main
    late = build_features(tables, T + pd.Timedelta(hours=15), s, schema).set_index("customer_id")
    pd.testing.assert_frame_equal(late, feats)




# ---- static attributes -----------------------------------------------------------------------------


def test_numbers_as_text_become_float(main: Any) -> None:
    feats, schema = main[2], main[3]
    assert "fee" in schema.numeric_attributes
    assert feats["fee"].dtype == "float64"
    assert feats.loc[1, "fee"] == 1200.0
    assert feats.loc[2, "fee"] == 3450.0
    assert np.isnan(feats.loc[3, "fee"])
    assert feats.loc[7, "fee"] == 12.5
    assert "score" in schema.numeric_attributes and np.isnan(feats.loc[3, "score"])


def test_a_comma_in_a_number_is_a_thousands_separator_only_in_groups_of_three() -> None:
    """'35,99' (a decimal comma) must never become 3599: not a number here, as for amounts."""
    from churnflow.features.build import parse_number_text

    text = pd.Series(["1,200", " 3 450 ", "$12.5", "", "35,99", "1,234,567.5", "-1,000", "12%", "1,2,3", None], dtype="str")
    got = parse_number_text(text).tolist()
    expected = [1200.0, 3450.0, 12.5, np.nan, np.nan, 1234567.5, -1000.0, 12.0, np.nan, np.nan]
    assert np.allclose(got, expected, equal_nan=True)


def test_low_cardinality_text_is_categorical(main: Any) -> None:
    feats, schema = main[2], main[3]
    assert schema.categorical_levels["plan"] == ["basic", "max", "pro"]
    assert list(feats["plan"].cat.categories) == ["basic", "max", "pro"]
    assert feats.loc[7, "plan"] == "max"


def test_dropped_columns_have_reasons(main: Any) -> None:
    schema = main[3]
    dropped = schema.dropped
    assert "identifier" in dropped["account_no"] and "whole number" in dropped["account_no"]
    assert "free text" in dropped["notes"] and "max_category_levels" in dropped["notes"]
    assert "personal data" in dropped["email"]
    assert "features.exclude" in dropped["status"]
    assert "constant" in dropped["country"]
    for col in ("account_no", "notes", "email", "status", "country", "churn_time", "signup_time"):
        assert col not in schema.features


def test_pii_never_a_feature_even_if_numeric_or_excluded() -> None:
    cu = {"customer_id": [1, 2, 3], "signup_time": ["2020-01-01"] * 3,
          "phone": [111, 222, 111], "name": ["a", "b", "a"]}
    tables = _tables(cu, [(1, "2020-12-01", 1.0, "a")])
    s = Settings(features={"exclude": ["name"]})
    schema = infer_schema(tables, s)
    assert "personal data" in schema.dropped["phone"]
    assert "personal data" in schema.dropped["name"]
    assert "phone" not in schema.features and "name" not in schema.features
    feats = build_features(tables, T, s, schema)
    assert "phone" not in feats and "name" not in feats


def test_exclude_is_honoured_and_needed() -> None:
    tables = _tables(CUSTOMERS, EVENTS, CONTACTS)
    without = infer_schema(tables, _settings(features={"exclude": []}))
    assert "status" in without.features  # a usable column...
    assert "status" not in infer_schema(tables, _settings()).features  # ...until excluded


def _with_unseen_plan(tables: Tables) -> Tables:
    cu = tables.customers.copy()
    cu.loc[cu["customer_id"] == 1, "plan"] = "enterprise"
    return Tables(customers=cu, events=tables.events, contacts=tables.contacts, end_date=tables.end_date)


@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
def test_unseen_category_level_at_scoring_is_nan(main: Any) -> None:
    tables, s, _, schema = main
    feats = build_features(_with_unseen_plan(tables), T, s, schema).set_index("customer_id")
    assert pd.isna(feats.loc[1, "plan"])
    assert feats.loc[2, "plan"] == "pro"
    assert list(feats["plan"].cat.categories) == ["basic", "max", "pro"]


@pytest.mark.filterwarnings("error::pandas.errors.Pandas4Warning")
def test_unseen_category_level_is_future_proof(main: Any) -> None:
    tables, s, _, schema = main
    feats = build_features(_with_unseen_plan(tables), T, s, schema)
    assert feats["plan"].isna().sum() == 1


def test_missing_attribute_column_at_scoring_is_nan(main: Any) -> None:
    tables, s, _, schema = main
    cu = tables.customers.drop(columns=["fee", "plan"])
    later = Tables(customers=cu, events=tables.events, contacts=tables.contacts, end_date=tables.end_date)
    feats = build_features(later, T, s, schema)
    assert feats["fee"].isna().all() and feats["plan"].isna().all()


def test_attribute_typing_through_validation() -> None:
    raw_cu = pd.DataFrame({
        "customer_id": list(range(1, 9)),
        "signup_time": ["2020-01-01"] * 8,
        "monthly_fee": ["1,000", "2,500", "", "30", "40", "50", " ", "70"],
        "segment": ["b", "a", "b", "a", "c", "c", "a", "b"],
        "member_no": [11, 12, 13, 14, 15, 16, 17, 18],
    })
    raw_ev = pd.DataFrame({"customer_id": [1, 2], "event_time": ["2020-12-01", "2020-12-02"], "amount": [1, 2]})
    s = Settings(features={"max_category_levels": 4})
    tables = validate_tables(raw_cu, raw_ev, None, s)
    schema = infer_schema(tables, s)
    assert "monthly_fee" in schema.numeric_attributes
    assert schema.categorical_levels == {"segment": ["a", "b", "c"]}
    assert "identifier" in schema.dropped["member_no"]
    feats = build_features(tables, T, s, schema)
    assert feats["monthly_fee"].tolist()[:2] == [1000.0, 2500.0]
    assert feats["monthly_fee"].isna().sum() == 2


# ---- determinism and partitions --------------------------------------------------------------------


def test_building_twice_is_identical(main: Any) -> None:
    tables, s, _, schema = main
    a = build_features(tables, T, s, schema)
    b = build_features(tables, T, s, schema)
    pd.testing.assert_frame_equal(a, b)
    assert infer_schema(tables, s) == schema


@pytest.mark.parametrize("as_of", ["2026-03-01", None])
def test_passes_split_between_threads_give_the_same_table(monkeypatch: pytest.MonkeyPatch, as_of: str | None) -> None:
    """Each customer's run of rows is summed by one thread: the split changes no bit (a training
    date cuts rows inside runs; scoring keeps them all)."""
    from churnflow.features import compiled
    from churnflow.features.demo import generate_demo_data

    s = Settings(data={"columns": {"event_type": "event_type", "churn_time": "churn_time",
                                   "pii": ["name", "email", "phone", "address"]}})
    data = generate_demo_data(3_000, seed=5)
    tables = validate_tables(data.customers, data.events, None, s)
    schema = infer_schema(tables, s)
    at = pd.Timestamp(as_of) if as_of else pd.Timestamp(schema.btyd["as_of"])
    tables_by_threads = []
    for threads in (1, 2, 5):
        monkeypatch.setattr(compiled, "THREADS", threads)
        tables_by_threads.append(build_features(tables, at, s, schema))
    for other in tables_by_threads[1:]:
        pd.testing.assert_frame_equal(other, tables_by_threads[0], check_exact=True)
    assert tables_by_threads[0]["monetary_365d"].gt(0).any() and tables_by_threads[0]["share_login_365d"].notna().any()


def test_a_window_asked_for_later_is_counted_like_a_declared_one(main: Any) -> None:
    """Windows declared up front are counted in the main pass; another one in a pass of its own."""
    from churnflow.features.history import Aggregates

    tables, _, _, schema = main
    ids = pd.Index(tables.customers["customer_id"])
    signup = tables.customers["signup_time"].to_numpy()

    def aggregates(windows: tuple[int, ...]) -> Aggregates:
        return Aggregates(ids, T.to_datetime64(), signup, tables.events, None, event_types=schema.event_types,
                          with_amount=True, windows=windows)

    declared, later = aggregates((17, 30)), aggregates((30,))
    for w in (17, 30):
        np.testing.assert_array_equal(later.frequency(w), declared.frequency(w))
        np.testing.assert_array_equal(later.monetary(w), declared.monetary(w))
        np.testing.assert_array_equal(later.share(0, w), declared.share(0, w))
    ev = tables.events[tables.events["event_time"] < T]
    within = ev[(T - ev["event_time"]) / pd.Timedelta(days=1) <= 17]
    expected = within.groupby("customer_id").size().reindex(ids, fill_value=0).to_numpy(dtype=float)
    assert expected.sum() == 4  # customer 1's two rows of 2020-12-21, customers 5 and 6
    np.testing.assert_array_equal(later.frequency(17), expected)


def test_compiled_loops_run_where_no_cache_folder_is_writable() -> None:
    """Numba refuses to cache at import when it finds no writable folder (a read-only install
    and home): the loops are then compiled in each process instead of failing the import."""
    import subprocess
    import sys

    code = ("from numba.core import caching; caching.CacheImpl._locator_classes = []\n"
            "import numpy as np\n"
            "from churnflow.features import compiled\n"
            "print(compiled.sorted_by_key_and_time(np.array([1, 1, 2]), np.array([5, 6, 0])))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_event_row_order_does_not_matter(main: Any) -> None:
    tables, s, feats, schema = main
    shuffled = Tables(customers=tables.customers, events=tables.events.sample(frac=1, random_state=3),
                      contacts=tables.contacts.iloc[::-1], end_date=tables.end_date)
    pd.testing.assert_frame_equal(build_features(shuffled, T, s, schema).set_index("customer_id"), feats)


@pytest.mark.parametrize("subset", [[3], [7, 1], [2, 4, 3]])
def test_partition_independence(main: Any, subset: list[int]) -> None:
    tables, s, feats, schema = main
    part = build_features(tables, T, s, schema, customer_ids=pd.Index(subset)).set_index("customer_id")
    pd.testing.assert_frame_equal(part, feats.loc[subset])


def test_partitions_with_only_their_own_rows(main: Any) -> None:
    """A Dask partition holds only its customers' rows; features must not need the others
    (population-level BG/NBD parameters come from the schema, as a trained model's do)."""
    tables, s, feats, schema = main
    schema = with_btyd_fitted(tables, T, s, schema)
    ids = [1, 3]
    part_tables = Tables(
        customers=tables.customers[tables.customers["customer_id"].isin(ids)],
        events=tables.events[tables.events["customer_id"].isin(ids)],
        contacts=tables.contacts[tables.contacts["customer_id"].isin(ids)],
        end_date=tables.end_date,
    )
    part = build_features(part_tables, T, s, schema, customer_ids=pd.Index(ids)).set_index("customer_id")
    pd.testing.assert_frame_equal(part, feats.loc[ids])


def test_features_of_ids_the_customers_table_lacks_are_missing(main: Any) -> None:
    """An id asked for but not in the customers table (a partition's population given by the
    caller) gets missing attributes, categories included, and the others their own."""
    tables, s, feats, schema = main
    part = build_features(tables, T, s, schema, customer_ids=pd.Index([7, 99, 1])).set_index("customer_id")
    pd.testing.assert_frame_equal(part.loc[[7, 1]], feats.loc[[7, 1]])
    assert part.loc[99, "fee"] != part.loc[99, "fee"]  # NaN
    assert all(pd.isna(part.loc[99, c]) for c in schema.categorical_levels)


@pytest.mark.parametrize("kind", ["int", "text"])
def test_positions_are_get_indexer_s_whether_sorted_or_not(kind: str) -> None:
    """Sorted unique ids are merged, others hashed: the same answer (-1: not there)."""
    from churnflow.features.history import positions

    rng = np.random.default_rng(4)
    for trial in range(200):
        index = np.sort(rng.choice(60, rng.integers(0, 25), replace=False))
        values = np.sort(rng.choice(60, rng.integers(0, 25), replace=False))
        if trial % 4 == 0:
            values = index[rng.random(len(index)) < 0.6]  # a subset, or all of them
        if trial % 5 == 0:
            values = values[::-1]  # not sorted: hashed
        if trial % 7 == 0:
            values = np.sort(np.r_[values, values[:2]])  # repeated: hashed
        wrap = (lambda a: pd.Index(a)) if kind == "int" else (lambda a: pd.Index([f"c{x:03d}" for x in a], dtype="str"))
        found, expected = positions(wrap(index), wrap(values)), wrap(index).get_indexer(wrap(values))
        assert np.array_equal(found, expected), (index, values)


@pytest.mark.parametrize("distinct", [3, 300])
def test_categories_numbered_once_each_are_known_levels(distinct: int) -> None:
    """Customers' categories are numbered per distinct text (compiled for a few, Arrow for many):
    the same categorical as mapping every value, blanks, spaces and unseen texts included."""
    from churnflow.features.build import _known_levels_once_each
    from churnflow.features.naming import known_levels

    texts = [f"plan {i % distinct}" for i in range(2_000)] + [None, " plan 1 ", "", "new plan"]
    values = pd.Series(texts, dtype="str")
    levels = ["plan 0", "plan 1", "plan 2"]
    got = _known_levels_once_each(values, levels)
    expected = known_levels(values, levels)
    assert list(got.categories) == levels and np.array_equal(got.codes, expected.codes)


def test_run_starts_are_the_first_row_of_each_run() -> None:
    from churnflow.features import compiled

    rng = np.random.default_rng(8)
    for n in [0, 1, 2, 50]:
        values = np.sort(rng.integers(0, 9, n))
        expected = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if n else np.zeros(0, np.intp)
        assert np.array_equal(compiled.run_starts(values), expected)


def test_partition_independence_numbers_as_text(main: Any) -> None:
    tables, s, feats, schema = main
    part = build_features(tables, T, s, schema, customer_ids=pd.Index([7, 1])).set_index("customer_id")
    pd.testing.assert_series_equal(part["fee"], feats.loc[[7, 1], "fee"])


# ---- labels ---------------------------------------------------------------------------------------


def test_inactivity_labels() -> None:
    tables = _tables(
        {"customer_id": [1, 2, 3, 4], "signup_time": ["2020-01-01"] * 4},
        [(1, "2020-12-01", 1, "a"), (2, "2020-12-01", 1, "a"), (3, "2020-12-01", 1, "a"), (4, "2020-12-01", 1, "a"),
         (1, "2021-01-01 00:00", 1, "a"),   # on T: first day of the horizon -> active
         (2, "2021-03-31 23:59", 1, "a"),   # last minute of the 90-day horizon -> active
         (3, "2021-04-01 00:00", 1, "a")],  # T + 90 days: outside -> churned
    )
    labels = churn_labels(tables, T, 90, "inactivity", pd.Index([1, 2, 3, 4]))
    assert labels.dtype == "int8"
    assert labels.to_dict() == {1: 0, 2: 0, 3: 1, 4: 1}


def test_explicit_labels() -> None:
    tables = _tables(
        {"customer_id": [1, 2, 3, 4, 5], "signup_time": ["2020-01-01"] * 5,
         "churn_time": ["2021-01-01", "2021-03-31", "2021-04-01", None, "2020-12-31"]},
        [(1, "2020-12-01", 1, "a")],
    )
    s = Settings(data={"columns": {"churn_time": "churn_time"}}, churn={"definition": "explicit", "horizon_days": 90})
    schema = infer_schema(tables, s)
    snap = build_snapshots(tables, [T], s, schema).set_index("customer_id")
    assert snap["label"].dtype == "int8"
    # 5 churned before T: not in the snapshot; 1 churns on T (inside), 3 on T+90 (outside)
    assert snap["label"].to_dict() == {1: 1, 2: 1, 3: 0, 4: 0}


@pytest.mark.parametrize(
    "flags", [[0, 1, 0, 1], [False, True, False, True], ["no", "Yes", "No", "yes"], ["false", "TRUE", "False", "true"]],
    ids=["01", "bool", "yesno", "truefalse"],
)
def test_label_definition_snapshot_table(flags: list[Any]) -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "Churn": flags,
                        "plan": ["x", "y", "x", "y"], "months": [3.0, 10.0, 20.0, 3.0]})
    s = Settings(data={"events": "", "customers": "t.csv", "columns": {"label": "Churn", "signup_time": ""}},
                 churn={"definition": "label"})
    tables = validate_tables(raw, None, None, s)
    schema = infer_schema(tables, s)
    assert "label" not in schema.features and "Churn" not in schema.features
    snap = build_snapshots(tables, [snapshot_as_of(tables)], s, schema)
    assert snap["customer_id"].tolist() == ["a", "b", "c", "d"]
    assert snap["label"].tolist() == [0, 1, 0, 1]
    assert snap["label"].dtype == "int8"
    assert snap["plan"].tolist() == ["x", "y", "x", "y"]


def test_build_snapshots_stacks_and_labels(main: Any) -> None:
    tables, s, feats, schema = main
    t2 = pd.Timestamp("2021-02-01")
    snap = build_snapshots(tables, [T, t2], s, schema)
    assert sorted(snap["as_of"].unique()) == [T, t2]
    first = snap[snap["as_of"] == T].set_index("customer_id")
    pd.testing.assert_frame_equal(first.drop(columns="label"), feats)
    expected = churn_labels(tables, T, 90, "inactivity", pd.Index(first.index))
    assert first["label"].tolist() == expected.tolist()
    # customer 1 is active on T (event at T) and in February; 4 never active: churned
    assert first.loc[1, "label"] == 0 and first.loc[4, "label"] == 1
    assert isinstance(snap["plan"].dtype, pd.CategoricalDtype)
    unlabeled = build_snapshots(tables, [T], s, schema, with_labels=False)
    assert "label" not in unlabeled


def test_build_snapshots_refuses_window_past_data_end(main: Any) -> None:
    tables, s, _, schema = main  # end_date 2021-06-30, horizon 90
    last_ok = tables.end_date - pd.Timedelta(days=89)  # window T..T+89 ends on the end date
    check_label_window(tables, last_ok, 90)
    build_snapshots(tables, [last_ok], s, schema)
    with pytest.raises(ValueError, match="after the end of the data"):
        build_snapshots(tables, [T, last_ok + pd.Timedelta(days=1)], s, schema)
    # without labels (scoring) any as-of is fine
    build_snapshots(tables, [last_ok + pd.Timedelta(days=1)], s, schema, with_labels=False)
