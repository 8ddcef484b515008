"""Data contracts: mapping, parsing and every validation rule, with messages a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnflow.features.contracts import (
    DataValidationError,
    Problem,
    Tables,
    load_tables,
    parse_dates,
    parse_flag,
    validate_tables,
)
from churnflow.features.settings import Settings
from churnflow.features.sources import SourceError

# ---- helpers ------------------------------------------------------------------------------------


def _settings(**sections: Any) -> Settings:
    return Settings(**sections)


def _customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "signup_time": ["2020-01-01", "2020-01-02", "2020-01-04"],
            "plan": ["a", "b", "a"],
        }
    )


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 1],
            "event_time": ["2020-02-01", "2020-02-02", "2020-02-03", "2020-02-04"],
            "amount": [1.0, 2.0, 3.0, 4.0],
        }
    )


def _contacts() -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": [1, 2], "contact_time": ["2020-01-05", "2020-01-06"], "campaign": ["spring", "winback"]}
    )


def _fail(cu: pd.DataFrame | None, ev: pd.DataFrame | None, co: pd.DataFrame | None = None,
          settings: Settings | None = None, names: dict[str, str] | None = None) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        validate_tables(cu, ev, co, settings or _settings(), names)
    return info.value


def _only(err: DataValidationError, table: str, column: str) -> Problem:
    found = [p for p in err.problems if p.table == table and p.column == column]
    assert found, f"no problem for {table}.{column} in {err.problems}"
    return found[0]


NAMES = {"customers": "crm.csv", "events": "orders.parquet", "contacts": "calls.csv"}


# ---- the happy path -----------------------------------------------------------------------------


def test_valid_tables_are_canonical() -> None:
    t = validate_tables(_customers(), _events().iloc[::-1], _contacts(), _settings())
    assert isinstance(t, Tables)
    assert t.customers["signup_time"].dtype == "datetime64[ns]"
    assert t.events["event_time"].dtype == "datetime64[ns]"
    assert t.events["amount"].dtype == "float64"
    assert t.contacts["contact_time"].dtype == "datetime64[ns]"
    assert t.customers["customer_id"].dtype == "int64"  # keeps its source dtype
    assert t.events["customer_id"].dtype == "int64"
    # events sorted by customer and time
    assert t.events["customer_id"].tolist() == [1, 1, 2, 3]
    assert t.events.loc[t.events["customer_id"] == 1, "event_time"].is_monotonic_increasing
    # end date defaults to the day of the last event
    assert t.end_date == pd.Timestamp("2020-02-04")
    assert t.dropped_rows == {}


def test_customers_default_to_distinct_event_ids() -> None:
    ev = _events()
    t = validate_tables(None, ev, None, _settings(data={"customers": ""}))
    assert t.customers["customer_id"].tolist() == [1, 2, 3]


def test_declared_end_date_is_used() -> None:
    t = validate_tables(_customers(), _events(), None, _settings(data={"end_date": "2020-03-31"}))
    assert t.end_date == pd.Timestamp("2020-03-31")


# ---- every rule: table, column, rule, rows ------------------------------------------------------


def test_missing_mapped_column_lists_present_columns() -> None:
    ev = _events().rename(columns={"event_time": "ts"})
    err = _fail(_customers(), ev, names=NAMES)
    p = _only(err, "orders.parquet", "event_time")
    assert "is missing" in p.rule
    msg = str(err)
    assert "orders.parquet" in msg
    assert "'event_time'" in msg
    for present in ("customer_id", "ts", "amount"):
        assert present in msg


def test_unparsable_dates_are_reported_with_rows() -> None:
    cu = _customers()
    cu.loc[1, "signup_time"] = "not a date"
    err = _fail(cu, _events(), names=NAMES)
    p = _only(err, "crm.csv", "signup_time")
    assert "cannot be parsed" in p.rule
    assert p.rows == [1]
    assert p.values == ["not a date"]
    assert p.count == 1
    assert "crm.csv" in str(err) and "not a date" in str(err) and "row 2: " in str(err)  # in-memory: "row N", 1 = first


def test_unparsable_event_dates_name_the_user_column() -> None:
    ev = _events().rename(columns={"event_time": "ts"})
    ev.loc[2, "ts"] = "2020-13-45"
    err = _fail(_customers(), ev, settings=_settings(data={"columns": {"event_time": "ts"}}), names=NAMES)
    p = _only(err, "orders.parquet", "ts")
    assert "cannot be parsed" in p.rule and p.rows == [2]


def test_blank_dates_are_missing_not_unparsable() -> None:
    cu = _customers()
    cu.loc[0, "signup_time"] = ""
    t = validate_tables(cu, _events(), None, _settings())
    assert pd.isna(t.customers.loc[0, "signup_time"])


def test_duplicate_customer_ids() -> None:
    cu = pd.concat([_customers(), _customers().iloc[[1]]], ignore_index=True)
    err = _fail(cu, _events(), names=NAMES)
    p = _only(err, "crm.csv", "customer_id")
    assert "duplicate" in p.rule
    assert p.rows == [3]
    assert p.values == [2]


def test_events_for_unknown_customers() -> None:
    ev = _events()
    ev.loc[2, "customer_id"] = 99
    err = _fail(_customers(), ev, names=NAMES)
    p = _only(err, "orders.parquet", "customer_id")
    assert "unknown customer" in p.rule
    assert p.rows == [2]
    assert p.count == 1
    assert "99" in str(err)


def test_negative_amounts_refused_unless_allowed() -> None:
    ev = _events()
    ev.loc[1, "amount"] = -5.0
    err = _fail(_customers(), ev, names=NAMES)
    p = _only(err, "orders.parquet", "amount")
    assert "negative" in p.rule and "allow_negative_amounts" in p.rule
    assert p.rows == [1] and p.values == [-5.0]
    t = validate_tables(_customers(), ev, None, _settings(data={"allow_negative_amounts": True}))
    assert (t.events["amount"] < 0).sum() == 1


@pytest.mark.parametrize(("cu_empty", "ev_empty", "table"), [(True, False, "crm.csv"), (False, True, "orders.parquet")])
def test_empty_tables(cu_empty: bool, ev_empty: bool, table: str) -> None:
    cu = _customers().iloc[:0] if cu_empty else _customers()
    ev = _events().iloc[:0] if ev_empty else _events()
    err = _fail(cu, ev, names=NAMES)
    assert err.problems[0].table == table
    assert "empty" in str(err)


def test_events_after_declared_end_date() -> None:
    err = _fail(_customers(), _events(), settings=_settings(data={"end_date": "2020-02-02"}), names=NAMES)
    p = _only(err, "orders.parquet", "event_time")
    assert "end of the data" in p.rule and "2020-02-02" in p.rule
    assert sorted(p.rows) == [2, 3]
    assert p.count == 2


def test_event_on_the_declared_end_day_is_fine() -> None:
    ev = _events()
    ev.loc[3, "event_time"] = "2020-02-04 23:59"
    t = validate_tables(_customers(), ev, None, _settings(data={"end_date": "2020-02-04"}))
    assert len(t.events) == 4


def test_amount_not_a_number() -> None:
    ev = _events().astype({"amount": object})
    ev.loc[0, "amount"] = "ten"
    err = _fail(_customers(), ev, names=NAMES)
    p = _only(err, "orders.parquet", "amount")
    assert p.rule.startswith("is not a number")
    assert p.rows == [0] and p.values == ["ten"]


def test_churn_flag_not_parsable() -> None:
    cu = _customers().assign(Churn=["Yes", "maybe", "no"])
    s = _settings(data={"columns": {"label": "Churn"}}, churn={"definition": "label"})
    err = _fail(cu, _events(), settings=s, names=NAMES)
    p = _only(err, "crm.csv", "Churn")
    assert "churn flag" in p.rule
    assert p.rows == [1] and p.values == ["maybe"]


def test_churn_time_before_signup_time() -> None:
    """Blamed on the churn date alone, in the file's names (not on every column of the row)."""
    cu = _customers().assign(cancelled=[None, "2019-06-01", "2020-05-01"])
    s = _settings(data={"columns": {"churn_time": "cancelled"}})
    err = _fail(cu, _events(), settings=s, names=NAMES)
    assert len(err.problems) == 1, err.problems
    p = _only(err, "crm.csv", "cancelled")
    assert p.rule.startswith("has dates before 'signup_time'")
    assert p.rows == [1] and str(p.values[0]).startswith("2019-06-01")


def test_churn_time_before_signup_time_rows_are_dropped_when_asked() -> None:
    cu = _customers().assign(cancelled=[None, "2019-06-01", "2020-05-01"])
    s = _settings(data={"columns": {"churn_time": "cancelled"}, "drop_invalid_rows": True})
    t = validate_tables(cu, _events(), None, s)
    assert t.customers["customer_id"].tolist() == [1, 3]


def _snapshot(n: int = 60) -> pd.DataFrame:
    churned = [i % 3 == 0 for i in range(n)]
    return pd.DataFrame({"customer_id": range(n), "Churn": [int(c) for c in churned],
                         "plan": [("a", "b", "c", "d")[i % 4] for i in range(n)],  # mixed flags
                         "fee": [10.0 + i for i in range(n)]})  # one value per customer: not a copy


def test_placeholder_signup_and_churn_dates_are_refused_or_dropped() -> None:
    cu = _customers().assign(signup_time=["2020-01-01", "1900-01-01", None],
                             cancelled=[None, None, "1899-12-30"])
    s = _settings(data={"columns": {"churn_time": "cancelled"}})
    err = _fail(cu, _events(), settings=s, names=NAMES)
    assert [(p.column, p.rows) for p in err.problems] == [("signup_time", [1]), ("cancelled", [2])], err.problems
    assert all("placeholder dates" in p.rule for p in err.problems)
    kept = validate_tables(cu, _events().iloc[:1], None, _settings(data={"columns": {"churn_time": "cancelled"},
                                                                        "drop_invalid_rows": True}))
    assert kept.customers["customer_id"].tolist() == [1]


def test_a_copy_of_the_churn_flag_is_refused() -> None:
    """'Churn Label' beside the flag, and a reason filled in only for churners: both named."""
    s = _settings(data={"columns": {"label": "Churn", "signup_time": ""}}, churn={"definition": "label"})
    cu = _snapshot()
    validate_tables(cu, None, None, s)  # ordinary attributes pass
    cu = cu.assign(label_text=["Yes" if c else "No" for c in cu["Churn"]],
                   reason=["price" if c else None for c in cu["Churn"]])
    err = _fail(cu, None, settings=s, names=NAMES)
    assert sorted(p.column for p in err.problems) == ["label_text", "reason"], err.problems
    p = _only(err, "crm.csv", "reason")
    assert "gives the churn flag away" in p.rule and 'features.exclude = ["reason"]' in p.rule
    assert p.rows == [0, 1] and p.count == 0  # one example per value, no row count: a column's problem
    excluded = _settings(data={"columns": {"label": "Churn", "signup_time": ""}}, churn={"definition": "label"},
                         features={"exclude": ["label_text", "reason"]})
    validate_tables(cu, None, None, excluded)  # the fix the message names
    validate_tables(cu.iloc[:40], None, None, s)  # too few customers to tell a copy from chance


def test_contacts_for_unknown_customers() -> None:
    co = _contacts()
    co.loc[1, "customer_id"] = 7
    err = _fail(_customers(), _events(), co, names=NAMES)
    p = _only(err, "calls.csv", "customer_id")
    assert "unknown customer" in p.rule
    assert p.rows == [1] and p.values == [7]


def test_missing_contacts_column_only_when_configured() -> None:
    co = _contacts().drop(columns="campaign")
    assert "campaign" not in validate_tables(_customers(), _events(), co, _settings()).contacts  # optional default
    err = _fail(_customers(), _events(), co, settings=_settings(data={"columns": {"campaign": "campaign"}}), names=NAMES)
    assert "is missing (data.columns.campaign names it)" in _only(err, "calls.csv", "campaign").rule


def test_two_broken_rules_reported_at_once() -> None:
    cu = pd.concat([_customers(), _customers().iloc[[0]]], ignore_index=True)  # duplicate id
    ev = _events()
    ev.loc[0, "amount"] = -1.0  # negative amount
    ev.loc[1, "customer_id"] = 42  # unknown customer
    err = _fail(cu, ev, names=NAMES)
    got = {(p.table, p.column) for p in err.problems}
    assert {("crm.csv", "customer_id"), ("orders.parquet", "amount"), ("orders.parquet", "customer_id")} <= got
    assert "3 problem(s)" in str(err)


def test_two_parse_problems_reported_at_once() -> None:
    cu = _customers()
    cu.loc[0, "signup_time"] = "??"
    ev = _events().astype({"amount": object})
    ev.loc[0, "amount"] = "ten"
    err = _fail(cu, ev, names=NAMES)
    assert {(p.table, p.column) for p in err.problems} == {("crm.csv", "signup_time"), ("orders.parquet", "amount")}


def test_parse_problem_and_duplicate_reported_at_once() -> None:
    cu = pd.concat([_customers(), _customers().iloc[[0]]], ignore_index=True)
    cu.loc[1, "signup_time"] = "??"
    err = _fail(cu, _events(), names=NAMES)
    got = {(p.table, p.column) for p in err.problems}
    assert {("crm.csv", "signup_time"), ("crm.csv", "customer_id")} <= got


def test_blank_event_customer_id_is_the_only_problem() -> None:
    ev = _events().astype({"customer_id": "float64"})
    ev.loc[2, "customer_id"] = float("nan")
    err = _fail(_customers(), ev, names=NAMES)
    assert len(err.problems) == 1
    assert err.problems[0].rows == [2]


def test_drop_blank_event_customer_id_drops_one_row() -> None:
    ev = _events().astype({"customer_id": "float64"})
    ev.loc[2, "customer_id"] = float("nan")
    t = validate_tables(_customers(), ev, None, _settings(data={"drop_invalid_rows": True}))
    assert t.dropped_rows == {"events": 1}
    assert len(t.events) == 3


# ---- drop_invalid_rows --------------------------------------------------------------------------


def test_drop_invalid_rows_drops_exactly_the_offenders() -> None:
    cu = pd.concat([_customers(), _customers().iloc[[1]]], ignore_index=True)  # duplicate of id 2
    cu = pd.concat([cu, pd.DataFrame({"customer_id": [4], "signup_time": ["garbage"], "plan": ["b"]})],
                   ignore_index=True)
    ev = _events().astype({"amount": object})
    ev.loc[0, "amount"] = "ten"  # not a number
    ev.loc[1, "amount"] = -3.0  # negative
    ev = pd.concat([ev, pd.DataFrame({"customer_id": [77, 3], "event_time": ["2020-02-05", "yesterday-ish"],
                                      "amount": [1.0, 1.0]})], ignore_index=True)
    t = validate_tables(cu, ev, None, _settings(data={"drop_invalid_rows": True}), NAMES)
    assert t.customers["customer_id"].tolist() == [1, 2, 3]
    assert t.customers.loc[t.customers["customer_id"] == 2, "plan"].tolist() == ["b"]  # first kept
    # kept: (3, 2020-02-03) and (1, 2020-02-04); dropped: ten, -3, unknown 77, bad date
    assert sorted(zip(t.events["customer_id"], t.events["event_time"].dt.day, strict=True)) == [(1, 4), (3, 3)]
    assert t.dropped_rows == {"crm.csv": 2, "orders.parquet": 4}


def test_drop_invalid_rows_drops_churn_before_signup_and_contacts() -> None:
    cu = _customers().assign(cancelled=[None, "2019-06-01", "2020-05-01"])
    co = _contacts()
    co.loc[1, "customer_id"] = 9
    s = _settings(data={"drop_invalid_rows": True, "columns": {"churn_time": "cancelled"}})
    t = validate_tables(cu, _events(), co, s, NAMES)
    assert t.customers["customer_id"].tolist() == [1, 3]
    assert t.contacts["customer_id"].tolist() == [1]
    assert t.dropped_rows["crm.csv"] == 1
    assert t.dropped_rows["calls.csv"] == 1
    # the events of the dropped customer are now unknown and dropped too
    assert 2 not in set(t.events["customer_id"])
    assert t.dropped_rows["orders.parquet"] == 1


def test_drop_invalid_rows_does_not_hide_missing_columns() -> None:
    ev = _events().drop(columns="amount")
    with pytest.raises(DataValidationError, match="is missing"):
        validate_tables(_customers(), ev, None, _settings(data={"drop_invalid_rows": True,
                                                                "columns": {"amount": "amount"}}))


# ---- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([20200131, 20201231]),
        pd.Series(["20200131", "20201231"]),
        pd.Series(["2020-01-31", "2020-12-31T00:00:00"]),
        pd.Series(["31/01/2020", "31/12/2020"]),
        pd.Series(pd.to_datetime(["2020-01-31", "2020-12-31"])),
        pd.Series(pd.to_datetime(["2020-01-31 01:00", "2020-12-31 01:00"]).tz_localize("Europe/Berlin")),
        pd.Series([" 2020-01-31 ", "2020-12-31"]),
    ],
    ids=["yyyymmdd-int", "yyyymmdd-str", "iso", "d/m/Y", "datetime", "tz-aware", "padded"],
)
def test_parse_dates_formats(values: pd.Series) -> None:
    out = parse_dates(values)
    assert out.dtype == "datetime64[ns]"
    assert out.tolist() == [pd.Timestamp("2020-01-31"), pd.Timestamp("2020-12-31")]


def test_parse_dates_time_zones_convert_to_utc() -> None:
    out = parse_dates(pd.Series(["2020-06-01T10:00:00+02:00", "2020-06-01T10:00:00Z"]))
    assert out.tolist() == [pd.Timestamp("2020-06-01 08:00"), pd.Timestamp("2020-06-01 10:00")]
    aware = pd.Series(pd.to_datetime(["2020-06-01 10:00"]).tz_localize("Europe/Berlin"))
    assert parse_dates(aware).tolist() == [pd.Timestamp("2020-06-01 08:00")]


def test_parse_dates_day_first_when_ambiguous_rows_disambiguate() -> None:
    # 13/02 cannot be month-first, so the whole column is read day-first
    out = parse_dates(pd.Series(["01/02/2020", "13/02/2020"]))
    assert out.tolist() == [pd.Timestamp("2020-02-01"), pd.Timestamp("2020-02-13")]


def test_parse_dates_unparsable_is_nat() -> None:
    out = parse_dates(pd.Series(["2020-01-01", "never", None]))
    assert out.iloc[0] == pd.Timestamp("2020-01-01")
    assert out.iloc[1:].isna().all()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([0, 1, 1]), [0, 1, 1]),
        (pd.Series([0.0, 1.0]), [0, 1]),
        (pd.Series([True, False]), [1, 0]),
        (pd.Series(["Yes", "no", " YES "]), [1, 0, 1]),
        (pd.Series(["TRUE", "false", "True"]), [1, 0, 1]),
    ],
    ids=["int", "float", "bool", "yes/no", "true/false"],
)
def test_parse_flag(values: pd.Series, expected: list[int]) -> None:
    assert parse_flag(values).tolist() == expected


def test_parse_flag_unknown_is_na() -> None:
    out = parse_flag(pd.Series(["yes", "perhaps", "2"]))
    assert out.iloc[0] == 1
    assert out.iloc[1:].isna().all()


@pytest.mark.parametrize(
    "flags", [[0, 1, 1], [False, True, True], ["no", "Yes", "yes"], ["FALSE", "true", "TRUE"]],
    ids=["01", "bool", "yesno", "truefalse"],
)
def test_label_column_becomes_int8(flags: list[Any]) -> None:
    cu = _customers().assign(Churn=flags)
    s = _settings(data={"columns": {"label": "Churn"}}, churn={"definition": "label"})
    t = validate_tables(cu, _events(), None, s)
    assert t.customers["label"].dtype == "int8"
    assert t.customers["label"].tolist() == [0, 1, 1]
    assert "Churn" not in t.customers


# ---- column mapping -----------------------------------------------------------------------------


def _mapped_settings(**data: Any) -> Settings:
    return _settings(
        data={
            **data,
            "columns": {
                "customer_id": "cust_no",
                "event_time": "ts",
                "amount": "value",
                "event_type": "kind",
                "signup_time": "joined",
                "contact_time": "when",
                "campaign": "camp",
            },
        }
    )


def _raw_mapped() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    cu = pd.DataFrame({"cust_no": ["c1", "c2", "c3"], "joined": ["2020-01-01", "2020-01-15", "2020-02-01"],
                       "region": ["n", "s", "n"]})
    ev = pd.DataFrame({"cust_no": ["c1", "c2", "c1", "c3"],
                       "ts": ["2020-03-01", "2020-03-02", "2020-04-01", "2020-04-20"],
                       "value": [10.0, 20.0, 30.0, 40.0], "kind": ["buy", "visit", "buy", "visit"]})
    co = pd.DataFrame({"cust_no": ["c2"], "when": ["2020-03-15"], "camp": ["winback"]})
    return cu, ev, co


def test_column_mapping_end_to_end() -> None:
    from churnflow.features.build import build_features, infer_schema

    cu, ev, co = _raw_mapped()
    s = _mapped_settings(contacts="c.csv")
    t = validate_tables(cu, ev, co, s)
    assert list(t.events.columns) == ["customer_id", "event_time", "amount", "event_type"]
    assert {"customer_id", "signup_time", "region"} == set(t.customers.columns)
    assert list(t.contacts.columns) == ["customer_id", "contact_time", "campaign"]
    assert t.events["customer_id"].tolist() == ["c1", "c1", "c2", "c3"]
    schema = infer_schema(t, s)
    feats = build_features(t, pd.Timestamp("2020-05-01"), s, schema).set_index("customer_id")
    assert feats.loc["c1", "events_total"] == 2
    assert feats.loc["c1", "monetary_total"] == 40.0
    assert feats.loc["c2", "contacts_365d"] == 1
    assert feats.loc["c3", "share_visit_365d"] == 1.0
    assert feats.loc["c2", "region"] == "s"


def test_canonical_name_clash_is_dropped_not_mixed_up() -> None:
    # the user's table has a column literally called "amount" that is NOT the mapped amount
    cu, ev, _ = _raw_mapped()
    ev = ev.assign(amount=[-1.0, -1.0, -1.0, -1.0])
    t = validate_tables(cu, ev, None, _mapped_settings())
    assert t.events["amount"].tolist() == [10.0, 30.0, 20.0, 40.0]


# ---- loading from files and databases -----------------------------------------------------------


def _canonical_raw() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    cu = pd.DataFrame({
        "customer_id": [1, 2, 3, 4],
        "signup_time": pd.to_datetime(["2020-01-01", "2020-02-01", "2020-03-01", "2020-07-01"]),
        "plan": ["basic", "pro", "basic", "pro"],
        "fee": [10.0, 20.0, 10.0, 20.0],
    })
    ev = pd.DataFrame({
        "customer_id": [1, 1, 2, 3, 3, 4, 2],
        "event_time": pd.to_datetime(["2020-01-05", "2020-05-31 23:00", "2020-06-01", "2020-04-01 10:30",
                                      "2020-06-15", "2020-07-02", "2020-02-03"], format="ISO8601"),
        "amount": [5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
    })
    co = pd.DataFrame({
        "customer_id": [1, 3, 2],
        "contact_time": pd.to_datetime(["2020-03-01", "2020-06-02", "2020-05-31"]),
        "campaign": ["a", "b", "a"],
    })
    return cu, ev, co


def _assert_same_tables(a: Tables, b: Tables) -> None:
    for name in ("customers", "events", "contacts"):
        pd.testing.assert_frame_equal(
            getattr(a, name).reset_index(drop=True), getattr(b, name).reset_index(drop=True), check_like=True
        )
    assert a.end_date == b.end_date


def test_load_tables_csv_parquet_sqlite_agree(tmp_path: Path) -> None:
    sa = pytest.importorskip("sqlalchemy")
    cu, ev, co = _canonical_raw()
    cu.to_csv(tmp_path / "customers.csv", index=False)
    ev.to_csv(tmp_path / "events.csv", index=False)
    co.to_csv(tmp_path / "contacts.csv", index=False)
    cu.to_parquet(tmp_path / "customers.parquet", index=False)
    ev.to_parquet(tmp_path / "events.parquet", index=False)
    co.to_parquet(tmp_path / "contacts.parquet", index=False)
    url = f"sqlite:///{tmp_path}/shop.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cu.to_sql("customers", conn, index=False)
        ev.to_sql("events", conn, index=False)
        co.to_sql("contacts", conn, index=False)
    engine.dispose()

    from_csv = load_tables(_settings(data={
        "customers": "customers.csv", "events": "events.csv", "contacts": "contacts.csv"}).model_copy(
        update={"root": tmp_path}))
    from_parquet = load_tables(_settings(data={
        "customers": str(tmp_path / "customers.parquet"), "events": str(tmp_path / "events.parquet"),
        "contacts": str(tmp_path / "contacts.parquet")}))
    from_sql = load_tables(_settings(data={
        "customers": url, "customers_table": "customers",
        "events": url, "events_table": "SELECT customer_id, event_time, amount FROM events",
        "contacts": url, "contacts_table": "contacts"}))
    assert len(from_csv.events) == 7 and len(from_csv.customers) == 4 and len(from_csv.contacts) == 3
    # ids are identifiers: a CSV's are read as text as written; Parquet and SQL keep their numbers
    assert from_csv.customers["customer_id"].tolist() == ["1", "2", "3", "4"]
    for name in ("customers", "events", "contacts"):
        frame = getattr(from_csv, name)
        frame["customer_id"] = frame["customer_id"].astype("int64")
    _assert_same_tables(from_csv, from_parquet)
    _assert_same_tables(from_csv, from_sql)


def test_sql_errors_name_the_database_table(tmp_path: Path) -> None:
    sa = pytest.importorskip("sqlalchemy")
    cu, ev, _ = _canonical_raw()
    ev.loc[0, "customer_id"] = 999
    url = f"sqlite:///{tmp_path}/shop.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cu.to_sql("customers", conn, index=False)
        ev.to_sql("events", conn, index=False)
    engine.dispose()
    s = _settings(data={"customers": url, "customers_table": "customers", "events": url, "events_table": "events"})
    with pytest.raises(DataValidationError, match=r"events \(sqlite database\): column 'customer_id'"):
        load_tables(s)
    with pytest.raises(SourceError, match="customers"):
        load_tables(_settings(data={"customers": url, "customers_table": "nope", "events": url,
                                    "events_table": "events"}))


def test_load_tables_as_of_cuts_everything_on_or_after(tmp_path: Path) -> None:
    cu, ev, co = _canonical_raw()
    cu = cu.assign(churn_time=pd.to_datetime(["2020-05-01", "2020-06-20", None, None]))
    cu.to_parquet(tmp_path / "customers.parquet", index=False)
    ev.to_parquet(tmp_path / "events.parquet", index=False)
    co.to_parquet(tmp_path / "contacts.parquet", index=False)
    s = _settings(data={"customers": "customers.parquet", "events": "events.parquet",
                        "contacts": "contacts.parquet", "columns": {"churn_time": "churn_time"}}).model_copy(
        update={"root": tmp_path})
    as_of = pd.Timestamp("2020-06-01")
    t = load_tables(s, as_of=as_of)
    assert (t.events["event_time"] < as_of).all()
    assert len(t.events) == 4  # 2020-06-01, 06-15, 07-02 are gone; 05-31 23:00 stays
    assert (t.contacts["contact_time"] < as_of).all() and len(t.contacts) == 2
    assert not (t.customers["signup_time"] >= as_of).any()
    assert t.customers["customer_id"].tolist() == [1, 2, 3]
    assert not (t.customers["churn_time"] >= as_of).any()
    assert t.customers["churn_time"].notna().sum() == 1  # the later churn date is forgotten
    assert t.end_date == pd.Timestamp("2020-05-31")


def test_missing_file_names_the_settings_key(tmp_path: Path) -> None:
    s = _settings(data={"customers": str(tmp_path / "nope.csv"), "events": str(tmp_path / "events.csv")})
    with pytest.raises(SourceError, match=r"data\.customers"):
        load_tables(s)
    _, ev, _ = _canonical_raw()
    ev.to_csv(tmp_path / "events.csv", index=False)
    s = _settings(data={"customers": "", "events": str(tmp_path / "events.csv"),
                        "contacts": str(tmp_path / "calls.csv")})
    with pytest.raises(SourceError, match=r"data\.contacts"):
        load_tables(s)


def test_unsupported_file_type(tmp_path: Path) -> None:
    (tmp_path / "events.json").write_text("x")
    with pytest.raises(SourceError, match=r"unsupported file type '\.json'.*data\.events"):
        load_tables(_settings(data={"customers": "", "events": str(tmp_path / "events.json")}))


@pytest.mark.parametrize("name", ["events.xlsx", "events.csv"])
def test_a_workbook_is_named_as_such(name: str, tmp_path: Path) -> None:
    """An Excel file given where a CSV is expected (by its name, or saved under a .csv name)."""
    (tmp_path / name).write_bytes(b"PK\x03\x04 a zip archive, as .xlsx files are")
    with pytest.raises(SourceError, match=r"spreadsheet workbook.*CSV \(UTF-8\)"):
        load_tables(_settings(data={"customers": "", "events": str(tmp_path / name)}))


def test_a_folder_is_a_parquet_dataset_or_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"is a folder, not a file; point data\.events at the file"):
        load_tables(_settings(data={"customers": "", "events": str(tmp_path / "empty")}))
    (tmp_path / "parts").mkdir()
    _events().assign(customer_id=lambda d: d["customer_id"].astype(str)).to_parquet(tmp_path / "parts" / "a.parquet")
    tables = load_tables(_settings(data={"customers": "", "events": str(tmp_path / "parts")}))
    assert len(tables.events) == 4


def test_utf16_and_blank_separator_rows_are_read(tmp_path: Path) -> None:
    """Excel's "Unicode text" (UTF-16 with a byte-order mark) and trailing ",,," lines."""
    text = "customer_id,event_time,amount\n0007,2024-04-01,12.5\n0008,2024-04-02,3\n,,\n,,\n"
    (tmp_path / "events.csv").write_bytes(text.encode("utf-16"))
    tables = load_tables(_settings(data={"customers": "", "events": str(tmp_path / "events.csv")}))
    assert tables.events["customer_id"].tolist() == ["0007", "0008"]


def test_repeated_header_line_is_named_once(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("customer_id,event_time,amount\n1,2024-04-01,12.5\n"
                                         "customer_id,event_time,amount\n2,2024-04-02,3\n")
    with pytest.raises(DataValidationError) as info:
        load_tables(_settings(data={"customers": "", "events": str(tmp_path / "events.csv")}))
    assert [str(p) for p in info.value.problems] == [
        "events.csv: column 'customer_id' repeats the header row (several exports joined?); delete those lines"
        " — 1 row(s), e.g. line 3: 'customer_id'"]


def test_database_url_needs_a_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shop.db"
    with pytest.raises(SourceError, match=r"data\.events_table"):
        load_tables(_settings(data={"customers": "", "events": url}))


# ---- dates: one format per column ----------------------------------------------------------------


@pytest.mark.parametrize(("values", "fragment"), [
    (["2024-11-09 22:23", "25/03/2024 10:00"], "mixes date formats"),
    (["01/04/2024", "03/04/2024"], "no value settles"),
    (["25/03/2024", "03/26/2024"], "month-first values"),
])
def test_ambiguous_date_columns_are_refused(values: list[str], fragment: str) -> None:
    from churnflow.features.dates import DateFormatError

    with pytest.raises(DateFormatError, match=fragment) as info:
        parse_dates(pd.Series(values))
    assert "data.dayfirst" in str(info.value)


def test_dayfirst_setting_settles_the_order() -> None:
    values = pd.Series(["2024-11-09 22:23", "05/03/2024 10:00"])
    assert parse_dates(values, dayfirst=True).tolist() == [pd.Timestamp("2024-11-09 22:23"),
                                                           pd.Timestamp("2024-03-05 10:00")]
    assert parse_dates(values, dayfirst=False)[1] == pd.Timestamp("2024-05-03 10:00")


def test_rare_second_format_in_a_long_column_is_named_not_misread() -> None:
    from churnflow.features.dates import DateFormatError

    values = pd.Series(pd.date_range("2024-01-01", periods=50_000, freq="min").strftime("%Y-%m-%d %H:%M"))
    values.iloc[33_333] = "04/05/2024 10:00"
    with pytest.raises(DateFormatError) as info:
        parse_dates(values)
    assert 33_333 in info.value.examples.index


@pytest.mark.parametrize("values", [
    ["2024-01-01", "0001-01-01"], ["2024-01-01", "9999-12-31 00:00"], ["20240101", "99991231"],
    ["01/02/2024", "25/12/9999"], ["2024-01-01 10:00+02:00", "9999-12-31 00:00+00:00"],
    ["2024/01/02", "9999/12/31"], ["Jan 5 2024", "Dec 31 9999"],
])
def test_placeholder_dates_out_of_range_are_missing_not_a_crash(values: list[str]) -> None:
    parsed = parse_dates(pd.Series(values))
    assert parsed.dtype == "datetime64[ns]" and parsed.notna().tolist() == [True, False]


def test_placeholder_dates_are_reported_with_their_fix() -> None:
    """Text or Parquet dates (microseconds hold year 1): the row is named, nothing crashes."""
    ev = _events().assign(event_time=["2020-02-01", "0001-01-01", "2020-02-03", "next week"])
    err = _fail(_customers(), ev, names=NAMES)
    far = [p for p in err.problems if "out of range" in p.rule]
    assert len(far) == 1 and far[0].rows == [1] and far[0].values == ["0001-01-01"] and "leave those cells empty" in far[0].rule
    assert _only(err, "orders.parquet", "event_time").rows  # (the first: out of range)
    assert [p.rows for p in err.problems if "cannot be parsed" in p.rule] == [[3]]
    stored = pd.Series(pd.array(["2020-02-01", "0001-01-01", "2020-02-03", "2020-02-04"], dtype="datetime64[us]"))
    err = _fail(_customers(), _events().assign(event_time=stored), names=NAMES)
    assert [(p.rows, "out of range" in p.rule) for p in err.problems] == [([1], True)]


@pytest.mark.parametrize(("values", "expected"), [
    (["3/25/2024 10:00 AM", "3/26/2024 1:05 PM", "3/27/2024 12:00:00 AM"],
     ["2024-03-25 10:00", "2024-03-26 13:05", "2024-03-27 00:00"]),  # US Excel, 12-hour clock
    (["25/03/2024 10:00 AM", "26/03/2024 01:00 PM"], ["2024-03-25 10:00", "2024-03-26 13:00"]),
    (["2024-03-25 10:00:00.000 +0000", "2024-03-26 11:00:00.000 +0200"],
     ["2024-03-25 10:00", "2024-03-26 09:00"]),  # SQL export: a space before the offset
])
def test_export_time_formats_are_read(values: list[str], expected: list[str]) -> None:
    assert parse_dates(pd.Series(values)).tolist() == [pd.Timestamp(e) for e in expected]


def test_per_column_format_wins(tmp_path: Path) -> None:
    ev = _events().assign(event_time=["02/01/2020", "02/02/2020", "02/03/2020", "02/04/2020"])
    s = _settings(data={"date_formats": {"event_time": "%m/%d/%Y"}})
    t = validate_tables(_customers(), ev, None, s)
    assert t.events["event_time"].dt.month.tolist() == [2, 2, 2, 2]


# ---- personal data -------------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "values", "personal"), [
    ("contact", [f"user{i}@example.com" for i in range(8)], True),
    ("tel", [f"+44 7700 900{i:03d}" for i in range(8)], True),
    ("who", ["Ann Lee", "Bob Ray", "Cy Dunn", "Dee Hart", "Eve Stone", "Fay Moss", "Gus Pike", "Hal Ford"], True),
    ("email_opt_in", ["yes", "no"] * 4, False),  # a personal-data word, but a flag, not an address
    ("home_address", [f"{i} High Street" for i in range(8)], True),
    ("PhoneService", ["Yes", "No"] * 4, False),
    ("plan", ["Gold Plan", "Basic Plan"] * 4, False),
    ("credit_limit", ["1,200", "3,450", "900", "12,000", "450", "7,800", "2,100", "660"], False),
    ("monthly_fee", [9.99, 19.99, 29.99, 9.99, 19.99, 49.0, 5.0, 7.5], False),
    ("city", ["New York", "Los Angeles"] * 4, False),
    ("home", ["12 High Street", "4 Elm Road", "77 Baker St.", "Flat 2, 10 Mill Rd, Leeds", "1 Church Rd",
              "3 Park Avenue", "Hauptstraße 5", "221b Baker Street"], True),  # addresses under any name
    ("store", ["High Street", "Elm Road", "Retail Park"] * 3, False),  # places, not a person's address
    ("dob", [f"19{60 + i}-0{1 + i % 9}-1{i}" for i in range(8)], True),
    ("date_of_birth", pd.to_datetime([f"19{60 + i}-0{1 + i % 9}-1{i}" for i in range(8)]), True),
    ("birth_year_band", ["1960s", "1970s"] * 4, False),
    ("postcode", ["SW1A 1AA", "EC1A 1BB", "W1A 0AX", "M1 1AE", "B33 8TH", "CR2 6XH", "LS1 4AP", "G1 1XQ"], True),
    ("zip_code", [10001 + 7 * i for i in range(8)], True),
])
def test_personal_data_detector(column: str, values: list[Any], personal: bool) -> None:
    from churnflow.features.personal import personal_data_reason

    assert bool(personal_data_reason(pd.Series(values), column)) is personal


def test_undeclared_personal_column_is_left_out_and_said() -> None:
    """Not declared: the column is gone before anything else sees it, and a note says how to settle it."""
    cu = _customers().assign(mail=["a.b@example.com", "c@example.org", "d@example.net"])
    tables = validate_tables(cu, _events(), None, _settings(), NAMES)
    assert "mail" not in tables.customers
    assert [n for n in tables.notes if "mail" in n] == [
        "crm.csv: column 'mail' looks like personal data (its values look like e-mail addresses): it is left out "
        "(never a feature, its values are not used or written anywhere). Settle it in your settings: add it to "
        "data.columns.pii, or, if it is not personal data, opt in with features.allow_personal = [\"mail\"]"]
    for fix in ({"data": {"columns": {"pii": ["mail"]}}}, {"features": {"allow_personal": ["mail"]}}):
        settled = validate_tables(cu, _events(), None, _settings(**fix))
        assert "mail" in settled.customers and not [n for n in settled.notes if "mail" in n]


def test_personal_contact_field_must_be_declared() -> None:
    """A contact field the list shows must be declared personal, or it would also be a feature."""
    cu = _customers().assign(mail=["a.b@example.com", "c@example.org", "d@example.net"])
    err = _fail(cu, _events(), settings=_settings(serving={"contact_fields": ["mail"]}), names=NAMES)
    assert "serving.contact_fields names it, but data.columns.pii does not" in str(_only(err, "crm.csv", "mail"))


def test_one_column_mapped_to_two_roles() -> None:
    cu = _customers().assign(joined=["2020-01-01", "2020-01-02", "2020-01-04"])
    s = _settings(data={"columns": {"signup_time": "joined", "churn_time": "joined"}})
    err = _fail(cu, _events(), settings=s, names=NAMES)
    assert "is named by data.columns.signup_time and data.columns.churn_time" in str(_only(err, "crm.csv", "joined"))


def test_default_named_optional_columns_are_said() -> None:
    tables = validate_tables(_customers(), _events(), None, _settings(), NAMES)
    assert ("orders.parquet: column 'amount' is used as data.columns.amount (its default name); if it means "
            "something else, set data.columns.amount = \"\"") in tables.notes
    explicit = _settings(data={"columns": {"amount": "amount", "signup_time": "signup_time"}})
    assert validate_tables(_customers(), _events(), None, explicit, NAMES).notes == []


def test_ids_differing_only_by_case() -> None:
    cu = pd.DataFrame({"customer_id": ["AB12", "ab12", "C3"]})
    ev = pd.DataFrame({"customer_id": ["AB12", "C3"], "event_time": ["2020-02-01", "2020-02-02"]})
    err = _fail(cu, ev, names=NAMES)
    assert "differ only in upper/lower case" in str(_only(err, "crm.csv", "customer_id"))
    known = pd.DataFrame({"customer_id": ["AB12", "C3"]})
    err = _fail(known, ev.assign(customer_id=["ab12", "C3"]), names=NAMES)
    assert "'ab12' here is 'AB12' in the customers table" in str(err)


def test_dates_in_the_future_and_a_far_declared_end() -> None:
    future = (pd.Timestamp.today() + pd.Timedelta(days=400)).date().isoformat()
    co = _contacts().assign(contact_time=["2020-01-05", future])
    err = _fail(_customers(), _events(), co, names=NAMES)
    assert "has dates in the future" in str(_only(err, "calls.csv", "contact_time")) and f"'{future}'" in str(err)
    err = _fail(_customers(), _events(), settings=_settings(data={"end_date": "2021-01-01"}), names=NAMES)
    assert "ends on 2020-02-04, 332 days before data.end_date (2021-01-01)" in str(err)


def test_value_column_placeholders_are_missing_other_text_is_reported() -> None:
    s = _settings(features={"value_column": "fee"})
    cu = _customers().assign(fee=["10", "N/A", "?"])
    assert validate_tables(cu, _events(), None, s).customers["fee"].tolist()[0] == 10.0
    err = _fail(_customers().assign(fee=["10", "ten", "?"]), _events(), settings=s, names=NAMES)
    assert "features.value_column names it" in str(_only(err, "crm.csv", "fee")) and "'ten'" in str(err)


def test_settings_naming_missing_columns_suggest_the_closest() -> None:
    s = _settings(features={"exclude": ["plna"], "value_column": "fee"})
    err = _fail(_customers(), _events(), settings=s, names=NAMES)
    msg = str(err)
    assert "'plna' is missing (features.exclude names it); did you mean 'plan'?" in msg
    assert "'fee' is missing (features.value_column names it)" in msg
    assert "0 row(s)" not in msg


def test_an_as_of_after_the_data_names_the_last_usable_date() -> None:
    from churnflow.features.contracts import AsOfError, check_as_of

    tables = validate_tables(_customers(), _events(), None, _settings())
    check_as_of(tables, pd.Timestamp("2020-02-05"))  # the day after the last event: fine
    with pytest.raises(AsOfError, match=r"--as-of 2030-01-01 is after the end of the data \(2020-02-04.*use 2020-02-05"):
        check_as_of(tables, pd.Timestamp("2030-01-01"))


# ---- event types ---------------------------------------------------------------------------------


def _arrow_text(chunks: list[list[str | None]]) -> pd.Series:
    import pyarrow as pa

    arrays = [pa.array(["skipped", *chunk], pa.large_string()).slice(1) for chunk in chunks]  # offsets inside buffers
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(arrays, pa.large_string())))


@pytest.mark.parametrize("chunks", [
    [["buy", None, "café", "", "buy"], [], ["view", None, "café", "Kauf"]],  # nulls, empty text, non-ASCII
    [[f"type {i}" for i in range(200)] + [None]],  # more distinct texts than the compiled loop numbers
])
@pytest.mark.parametrize("threads", [1, 3])
def test_event_types_become_sorted_categories_with_unknown_for_missing(chunks: list[list[str | None]], threads: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The same categories however the rows are split between threads (each piece numbers the
    texts in the order it sees them)."""
    from churnflow.features import compiled
    from churnflow.features.contracts import event_type_categories

    monkeypatch.setattr(compiled, "THREADS", threads)
    texts = [t for chunk in chunks for t in chunk]
    filled = ["unknown" if t is None else t for t in texts]
    got = event_type_categories(_arrow_text(chunks))
    assert list(got.cat.categories) == sorted(set(filled))
    assert got.astype(str).tolist() == filled


@pytest.mark.parametrize("times", [
    ["2024-01-01", "2025-03-04 10:00", None], [None, None], [], ["2024-01-01"],
])
@pytest.mark.parametrize("unit", ["ns", "s"])
@pytest.mark.parametrize("tz", [None, "UTC"])
def test_the_last_time_is_pandas_max(times: list[str | None], unit: str, tz: str | None) -> None:
    """The events' last time (the data's end) from one integer max: missing times skipped, unit
    and zone kept."""
    from churnflow.features.contracts import last_time

    series = pd.Series(pd.to_datetime(times, format="ISO8601"), dtype="datetime64[ns]").astype(f"datetime64[{unit}]")
    if tz:
        series = series.dt.tz_localize(tz)
    got, expected = last_time(series), series.max()
    assert (pd.isna(got) and pd.isna(expected)) or (got == expected and got.unit == expected.unit)


def test_a_refusal_crosses_processes_whole() -> None:
    """A worker's refusal is pickled to the client: it comes back with every problem (rebuilt from
    its message alone, it held one 'problem' per character) and any other state."""
    import pickle

    error = DataValidationError([Problem("events.csv", "amount", "must not be negative", [7, 42], [-3.0, -3.0], 2)])
    error.latest_event = pd.Timestamp("2026-10-31")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is DataValidationError and str(back) == str(error)
    assert back.problems == error.problems and back.latest_event == error.latest_event
    assert str(pickle.loads(pickle.dumps(SourceError("events: x.csv does not exist")))) == "events: x.csv does not exist"


def test_a_file_written_with_decimal_commas_is_read_with_data_decimal(tmp_path: Path) -> None:
    """European Excel: ';' between values and '12,50' for twelve and a half. With data.decimal = ","
    amounts and numeric attributes are numbers; without it an amount '12,50' is reported (never
    read as 1250), and an attribute column of them is left out saying which setting reads it."""
    from churnflow.features.build import infer_schema

    (tmp_path / "customers.csv").write_text(
        "customer_id;signup_time;monthly_fee\n" + "".join(f"{i};2024-01-0{1 + i % 9};{20 + i},{i % 10}9\n" for i in range(1, 41)))
    (tmp_path / "events.csv").write_text(
        "customer_id;event_time;amount\n" + "".join(f"{i};2024-03-{10 + i % 18:02d} 10:00;1{i},50\n" for i in range(1, 41)))
    data = {"customers": "customers.csv", "events": "events.csv", "contacts": ""}
    tables = load_tables(_settings(data={**data, "decimal": ","}).model_copy(update={"root": tmp_path}))
    assert tables.events.set_index("customer_id").loc[["1", "2"], "amount"].tolist() == [11.5, 12.5]
    assert tables.customers.set_index("customer_id").loc[["1", "2"], "monthly_fee"].tolist() == [21.19, 22.29]
    schema = infer_schema(tables, _settings(data={**data, "decimal": ","}))
    assert "monthly_fee" in schema.numeric_attributes
    with pytest.raises(DataValidationError, match=r"'amount' is not a number .*data\.decimal = \",\".* '11,50'"):
        load_tables(_settings(data=data).model_copy(update={"root": tmp_path}))
    (tmp_path / "events.csv").write_text("customer_id;event_time;amount\n1;2024-03-10 10:00;1\n")
    plain = load_tables(_settings(data=data).model_copy(update={"root": tmp_path}))
    schema = infer_schema(plain, _settings(data=data))
    assert "monthly_fee" not in schema.numeric_attributes
    assert "decimal comma (e.g. '21,19'): set data.decimal" in schema.dropped["monthly_fee"]
