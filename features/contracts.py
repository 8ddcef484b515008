"""Data contracts: map the user's columns to canonical names, parse, validate.

Every input problem is reported with the source, column, rule and a few offending rows, all at
once, so a user fixes their extract in one round. Nothing is dropped silently: row-level
problems either stop the load or, when ``data.drop_invalid_rows`` is set, drop exactly the
offending rows and report how many.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features.errors import ChurnflowError
from features.settings import Settings
from features.sources import read_source, source_label

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5
_HASHED = {"customer_id", "event_time", "amount", "event_type", "contact_time", "campaign", "outcome",
           "signup_time", "churn_time"}
_RULE_NAMES = {"field_uniqueness": "has duplicate values (must be unique)", "not_nullable": "has empty values"}
_TRUE = {"1", "true", "yes", "y", "t", "churn", "churned"}
_FALSE = {"0", "false", "no", "n", "f", "stay", "stayed", "retained"}


@dataclass(frozen=True)
class Problem:
    table: str
    column: str
    rule: str
    rows: list[Any]
    values: list[Any]
    count: int

    def __str__(self) -> str:
        shown = ", ".join(f"row index {r}: {v!r}" for r, v in zip(self.rows, self.values, strict=False))
        return f"{self.table}: column '{self.column}' {self.rule} — {self.count} row(s), e.g. {shown}"


class DataValidationError(ChurnflowError, ValueError):
    """The input data break the contract; ``problems`` lists every broken rule."""

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = problems
        lines = [f"input data failed validation ({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems]
        lines.append(
            hint
            or "Fix the source data or the column mapping in [data.columns]; "
            "set data.drop_invalid_rows = true to drop offending rows instead (counts are reported)."
        )
        super().__init__("\n".join(lines))


@dataclass
class Tables:
    """The canonical, validated tables one run works on."""

    customers: pd.DataFrame
    events: pd.DataFrame | None
    contacts: pd.DataFrame | None
    end_date: pd.Timestamp
    """Last day covered by the data: the declared end, or the day of the last event."""
    dropped_rows: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """Row counts, date ranges and a content hash: enough to tell two inputs apart, no PII."""
        out: dict[str, Any] = {"end_date": self.end_date.date().isoformat()}
        for name, frame, time_col in (
            ("customers", self.customers, "signup_time"),
            ("events", self.events, "event_time"),
            ("contacts", self.contacts, "contact_time"),
        ):
            if frame is None:
                continue
            out[f"{name}_rows"] = len(frame)
            if time_col in frame and len(frame):
                out[f"{name}_from"] = str(frame[time_col].min().date()) if frame[time_col].notna().any() else ""
                out[f"{name}_to"] = str(frame[time_col].max().date()) if frame[time_col].notna().any() else ""
            # The columns churnflow uses: hashing free text (names, addresses) would double the cost.
            used = [c for c in frame.columns if c in _HASHED or c == "label" or frame[c].dtype.kind in "biufM"]
            hashed = pd.util.hash_pandas_object(frame[used], index=False).to_numpy()
            out[f"{name}_sha256"] = hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
        return out


# ---- parsing helpers -------------------------------------------------------------------------


def parse_dates(values: pd.Series) -> pd.Series:
    """Parse a date column in any common format to naive datetime64[ns].

    Accepts datetimes (time zones converted to UTC), ``yyyymmdd`` integers or strings, ISO
    strings and, as a last resort, pandas' mixed-format parser. Unparsable values become NaT;
    the caller reports them.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(values):
        as_int = pd.to_numeric(values, errors="coerce")
        return pd.to_datetime(as_int.astype("Int64").astype("string"), format="%Y%m%d", errors="coerce").astype(
            "datetime64[ns]"
        )
    text = values.astype("string").str.strip().replace("", pd.NA)
    present = text.notna()
    best: pd.Series | None = None
    for fmt in ("ISO8601", "%Y%m%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y"):
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
        if best is None or parsed.notna().sum() > best.notna().sum():
            best = parsed
        if parsed[present].notna().all():
            break
    assert best is not None
    if best[present].isna().any():
        mixed = pd.to_datetime(text, format="mixed", errors="coerce", utc=True)
        best = best.fillna(mixed)
    return best.dt.tz_localize(None).astype("datetime64[ns]")


def parse_flag(values: pd.Series) -> pd.Series:
    """Churn flags as 0/1 from 0/1, booleans, or yes/no/true/false text; anything else is NA."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("Int8")
    text = values.astype("string").str.strip().str.lower()
    text = text.str.replace(r"\.0$", "", regex=True)
    out = pd.Series(pd.NA, index=values.index, dtype="Int8")
    out[text.isin(_TRUE)] = 1
    out[text.isin(_FALSE)] = 0
    return out


def _problem(table: str, column: str, rule: str, bad: pd.Series) -> Problem:
    head = bad.head(MAX_EXAMPLES)
    return Problem(table, column, rule, [int(i) if isinstance(i, (int, np.integer)) else i for i in head.index], head.tolist(), int(len(bad)))


def _rename(frame: pd.DataFrame, mapping: dict[str, str], table: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Rename user columns to canonical names; report every mapped column that is missing."""
    problems = []
    for canonical, user in mapping.items():
        if user and user not in frame.columns:
            problems.append(
                Problem(
                    table,
                    user,
                    f"is missing (mapped to '{canonical}' in [data.columns]); columns present: {list(frame.columns)[:20]}",
                    [],
                    [],
                    0,
                )
            )
    reverse = {user: canonical for canonical, user in mapping.items() if user and user in frame.columns}
    clashes = [c for c in frame.columns if c in mapping and c not in reverse and mapping[c] and c != mapping[c]]
    frame = frame.drop(columns=clashes).rename(columns=reverse)
    return frame, problems


# ---- validation --------------------------------------------------------------------------------


def _failure_problems(exc: pa.errors.SchemaErrors, table: str) -> tuple[list[Problem], pd.Index]:
    cases = exc.failure_cases
    problems = []
    for (column, check), group in cases.groupby(["column", "check"], sort=True, dropna=False):
        rows = group["index"].dropna()
        problems.append(
            Problem(table, str(column), _RULE_NAMES.get(str(check), str(check)), rows.head(MAX_EXAMPLES).astype(int).tolist(),
                    group["failure_case"].head(MAX_EXAMPLES).tolist(), int(len(group)))
        )
    bad_index = pd.Index(cases["index"].dropna().astype(int).unique())
    return problems, bad_index


def _validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, table: str, drop: bool,
              problems: list[Problem], dropped: dict[str, int]) -> pd.DataFrame:
    try:
        schema.validate(frame, lazy=True)
        return frame
    except pa.errors.SchemaErrors as exc:
        found, bad_index = _failure_problems(exc, table)
        row_level = [p for p in found if p.rows]
        if drop and len(row_level) == len(found):
            dropped[table] = dropped.get(table, 0) + len(bad_index)
            for p in found:
                log.warning("dropping rows: %s", p)
            return frame.drop(index=bad_index)
        problems.extend(found)
        return frame


def _customers_schema(settings: Settings) -> pa.DataFrameSchema:
    cols: dict[str, pa.Column] = {
        "customer_id": pa.Column(nullable=False, unique=True, report_duplicates="exclude_first",
                                 checks=pa.Check(lambda s: s.notna(), name="must not be empty", element_wise=False)),
    }
    if settings.data.columns.signup_time and settings.data.columns.churn_time:
        return pa.DataFrameSchema(cols, checks=[
            pa.Check(lambda d: ~(d["churn_time"] < d["signup_time"]), name="churn_time before signup_time")
        ])
    return pa.DataFrameSchema(cols)


def _events_schema(known: pd.Index, end: pd.Timestamp | None, settings: Settings, has_amount: bool) -> pa.DataFrameSchema:
    end_check = [] if end is None else [
        pa.Check(lambda s: ~(s >= end + pd.Timedelta(days=1)),
                 name=f"is after the declared end of the data ({end.date()}; data.end_date)")
    ]
    cols = {
        "customer_id": pa.Column(nullable=False, checks=pa.Check(lambda s: s.isin(known), name="refers to an unknown customer (not in the customers table)")),
        "event_time": pa.Column(nullable=True, checks=end_check),  # blanks reported when parsing
    }
    if has_amount and not settings.data.allow_negative_amounts:
        cols["amount"] = pa.Column(nullable=True, checks=pa.Check(lambda s: ~(s < 0), name="must not be negative (set data.allow_negative_amounts for refunds)"))
    return pa.DataFrameSchema(cols)


def validate_tables(
    customers: pd.DataFrame | None,
    events: pd.DataFrame | None,
    contacts: pd.DataFrame | None,
    settings: Settings,
    names: dict[str, str] | None = None,
    require_label: bool = True,
) -> Tables:
    """Map, parse and validate raw tables into canonical ``Tables`` (pure: no I/O).

    ``require_label=False`` is for scoring snapshot tables: next week's customers table has no
    churn flag yet, so a missing label column is expected rather than an error.
    """
    names = names or {"customers": "customers", "events": "events", "contacts": "contacts"}
    c = settings.data.columns
    problems: list[Problem] = []
    dropped: dict[str, int] = {}
    drop = settings.data.drop_invalid_rows

    for key, frame in (("customers", customers), ("events", events), ("contacts", contacts)):
        if frame is not None and frame.empty:
            raise DataValidationError([Problem(names[key], "*", "table is empty", [], [], 0)],
                                      hint="The source has no rows; check the path, table name or query.")

    # ---- events: mapping and parsing
    ev = None
    has_amount = False
    if events is not None:
        ev_map = {"customer_id": c.customer_id, "event_time": c.event_time, "amount": c.amount, "event_type": c.event_type}
        ev, found = _rename(events, ev_map, names["events"])
        problems += found
        has_amount = bool(c.amount) and "amount" in ev
        if not found:
            ev = ev[[k for k in ev_map if ev_map[k] and k in ev]].copy()
            ev["event_time"], bad = _parse_column(ev["event_time"], names["events"], c.event_time, problems, drop,
                                                  dropped, required=True)
            ev = ev.loc[~bad]
            if has_amount:
                raw = ev["amount"]
                ev["amount"] = pd.to_numeric(raw, errors="coerce").astype("float64")
                bad_amount = ev["amount"].isna() & raw.notna()
                if bad_amount.any():
                    _report_or_drop(names["events"], c.amount, "is not a number", raw[bad_amount], problems, drop, dropped)
                    ev = ev.loc[~bad_amount]
            if "event_type" in ev:
                ev["event_type"] = ev["event_type"].astype("string[pyarrow]").fillna("unknown").astype("category")

    # ---- customers: mapping and parsing (derived from events when not configured)
    label = c.label if require_label or (customers is not None and c.label in customers.columns) else ""
    reserved = {"customer_id": c.customer_id, "signup_time": c.signup_time, "churn_time": c.churn_time, "label": label}
    if customers is None:
        if ev is None:
            raise DataValidationError([Problem(names["customers"], "*", "no customers or events source configured", [], [], 0)])
        cu = pd.DataFrame({"customer_id": pd.unique(ev["customer_id"])})
        cu_problems: list[Problem] = []
    else:
        cu, cu_problems = _rename(customers, reserved, names["customers"])
    problems += cu_problems
    if customers is not None and not cu_problems:
        for col, user in (("signup_time", c.signup_time), ("churn_time", c.churn_time)):
            if user and col in cu:
                cu[col], bad = _parse_column(cu[col], names["customers"], user, problems, drop, dropped)
                cu = cu.loc[~bad]
        if label and "label" in cu:
            raw = cu["label"]
            cu["label"] = parse_flag(raw)
            bad = cu["label"].isna()
            if bad.any():
                _report_or_drop(names["customers"], c.label, "is not a churn flag (0/1, true/false, yes/no)", raw[bad], problems, drop, dropped)
                cu = cu.loc[~bad]
            if not cu["label"].isna().any():
                cu["label"] = cu["label"].astype("int8")
    if any(not p.rows for p in problems):
        raise DataValidationError(problems)  # columns missing: the row rules cannot run

    cu = _validate(cu, _customers_schema(settings), names["customers"], drop, problems, dropped)
    if drop and cu["customer_id"].duplicated().any():
        dup = cu["customer_id"].duplicated()
        dropped[names["customers"]] = dropped.get(names["customers"], 0) + int(dup.sum())
        cu = cu.loc[~dup]

    ev_end = pd.Timestamp(settings.data.end_date) if settings.data.end_date else None
    if ev is not None:
        ev["customer_id"], cu["customer_id"] = _common_id_type(ev["customer_id"], cu["customer_id"])
        ev = _validate(ev, _events_schema(pd.Index(cu["customer_id"]), ev_end, settings, has_amount),
                       names["events"], drop, problems, dropped)

    co = None
    if contacts is not None:
        co_map = {"customer_id": c.customer_id, "contact_time": c.contact_time, "campaign": c.campaign, "outcome": c.outcome}
        co, found = _rename(contacts, co_map, names["contacts"])
        problems += found
        if not found:
            co = co[[k for k in co_map if co_map[k] and k in co]].copy()
            co["contact_time"], bad = _parse_column(co["contact_time"], names["contacts"], c.contact_time, problems,
                                                    drop, dropped, required=True)
            co = co.loc[~bad]
            co["customer_id"], _ = _common_id_type(co["customer_id"], cu["customer_id"])
            co = _validate(co, pa.DataFrameSchema({"customer_id": pa.Column(checks=pa.Check(
                lambda s: s.isin(pd.Index(cu["customer_id"])), name="refers to an unknown customer (not in the customers table)"))}),
                names["contacts"], drop, problems, dropped)
            for col in ("campaign", "outcome"):
                if col in co:
                    co[col] = co[col].astype("string").fillna("unknown").astype(str)

    if problems:
        raise DataValidationError(problems)

    if ev is not None and len(ev):
        end = ev_end if ev_end is not None else ev["event_time"].max().normalize()
    elif ev_end is not None:
        end = ev_end
    else:
        end = pd.Timestamp.today().normalize()
    if ev is not None:
        ev = _sorted_by_customer_and_time(ev)
    if customers is None and ev is not None:
        cu = cu.sort_values("customer_id").reset_index(drop=True)
    for table, n in dropped.items():
        log.warning("dropped %d invalid row(s) from %s (data.drop_invalid_rows = true)", n, table)
    return Tables(customers=cu.reset_index(drop=True), events=ev, contacts=co, end_date=end, dropped_rows=dropped)


def _report_or_drop(table: str, column: str, rule: str, bad: pd.Series, problems: list[Problem],
                    drop: bool, dropped: dict[str, int]) -> None:
    if drop:
        dropped[table] = dropped.get(table, 0) + len(bad)
        log.warning("dropping rows: %s", _problem(table, column, rule, bad))
    else:
        problems.append(_problem(table, column, rule, bad))


def _sorted_by_customer_and_time(ev: pd.DataFrame) -> pd.DataFrame:
    """Events ordered by customer, then time (what feature building relies on); a no-op when
    the source is already in that order, as exports usually are."""
    codes, _ = pd.factorize(ev["customer_id"], sort=True)
    times = ev["event_time"].to_numpy().view("int64")
    if len(ev) < 2 or bool(np.all((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (times[1:] >= times[:-1])))):
        return ev.reset_index(drop=True)
    order = np.lexsort((times, codes))
    return ev.take(order).reset_index(drop=True)


def _common_id_type(ids: pd.Series, known: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Make two id columns comparable: a blank id turns integers into floats (1.0 is customer 1),
    and only a genuine mix of numbers and text falls back to comparing as text."""
    def integral(s: pd.Series) -> pd.Series:
        if pd.api.types.is_float_dtype(s):
            finite = s.dropna()
            if (finite == finite.round()).all():
                return s.astype("Int64")
        return s

    ids, known = integral(ids), integral(known)
    if pd.api.types.is_numeric_dtype(ids) and pd.api.types.is_numeric_dtype(known):
        return ids, known
    if ids.dtype != known.dtype:
        return ids.astype("string").astype(object).where(ids.notna()), known.astype("string").astype(object)
    return ids, known


def _parse_column(raw: pd.Series, table: str, column: str, problems: list[Problem], drop: bool,
                  dropped: dict[str, int], required: bool = False) -> tuple[pd.Series, pd.Series]:
    parsed = parse_dates(raw)
    blank = raw.isna() | (raw.astype("string").str.strip() == "") if not pd.api.types.is_datetime64_any_dtype(raw) else raw.isna()
    if required and blank.any():
        _report_or_drop(table, column, "has empty dates", raw[blank].astype("string").fillna("<empty>"), problems, drop, dropped)
    bad = parsed.isna() & ~blank
    if bad.any():
        _report_or_drop(table, column, "has dates that cannot be parsed", raw[bad], problems, drop, dropped)
    bad = bad | (blank if required else False)
    return parsed, (bad if drop else pd.Series(False, index=raw.index))


# ---- loading -----------------------------------------------------------------------------------


def source_names(settings: Settings) -> dict[str, str]:
    """How errors name each configured source (file name or database table)."""
    d = settings.data
    return {
        "customers": source_label(d.customers, d.customers_table) if d.customers else "customers",
        "events": source_label(d.events, d.events_table) if d.events else "events",
        "contacts": source_label(d.contacts, d.contacts_table) if d.contacts else "contacts",
    }


def read_raw_tables(settings: Settings) -> dict[str, pd.DataFrame | None]:
    """Read every configured source as it is (the I/O step, safe to retry)."""
    d = settings.data
    return {
        "customers": read_source(d.customers, d.customers_table, settings, "customers") if d.customers else None,
        "events": read_source(d.events, d.events_table, settings, "events") if d.events else None,
        "contacts": read_source(d.contacts, d.contacts_table, settings, "contacts") if d.contacts else None,
    }


def load_tables(settings: Settings, as_of: pd.Timestamp | None = None,
                raw: dict[str, pd.DataFrame | None] | None = None, require_label: bool = True) -> Tables:
    """Read (unless ``raw`` is given), map and validate every configured source.

    With ``as_of``, rows dated on or after it are cut right after validation, before anything
    else sees them: training "as if today were as_of" cannot peek at later data.
    """
    raw = read_raw_tables(settings) if raw is None else raw
    tables = validate_tables(raw["customers"], raw["events"], raw["contacts"], settings, source_names(settings),
                             require_label=require_label)
    return cut_at(tables, as_of) if as_of is not None else tables


def cut_at(tables: Tables, as_of: pd.Timestamp) -> Tables:
    """Forget everything dated on or after ``as_of`` (events, contacts, later churn dates)."""
    as_of = pd.Timestamp(as_of)
    cu = tables.customers
    if "churn_time" in cu:
        cu = cu.assign(churn_time=cu["churn_time"].where(cu["churn_time"] < as_of))
    if "signup_time" in cu:
        cu = cu.loc[~(cu["signup_time"] >= as_of)]
    ev = tables.events
    if ev is not None:
        ev = ev.loc[ev["event_time"] < as_of]
    co = tables.contacts
    if co is not None:
        co = co.loc[co["contact_time"] < as_of]
    end = min(tables.end_date, as_of - pd.Timedelta(days=1))
    return Tables(customers=cu, events=ev, contacts=co, end_date=end, dropped_rows=tables.dropped_rows)
