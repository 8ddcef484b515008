"""Data contracts: map the user's columns to canonical names, parse, validate.

Every input problem is reported with the source, column, rule and a few offending rows, all at
once, so a user fixes their extract in one round. Nothing is dropped silently: row-level
problems either stop the load or, when ``data.drop_invalid_rows`` is set, drop exactly the
offending rows and report how many.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from churnflow.features import compiled
from churnflow.features.columns import (
    TABLE_COLUMNS,
    column_mapping,
    customer_setting_columns,
    customer_setting_issues,
    personal_contact_field_issue,
    personal_data_note,
    screened_columns,
    undeclared_personal_columns,
)
from churnflow.features.dates import (
    DateFormatError,
    DayMonthFacts,
    NumberFacts,
    ZoneFacts,
    check_zones,
    day_month_facts,
    day_month_order,
    number_unit,
    out_of_range,
    parse_dates,
    zone_facts,
)
from churnflow.features.errors import ChurnflowError
from churnflow.features.personal import personal_data_reason, screen_sample, screen_samples
from churnflow.features.settings import Settings
from churnflow.features.sources import read_source, source_kind, source_label
from churnflow.features.words import factorize_text

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5
_HASHED = {"customer_id", "event_time", "amount", "event_type", "contact_time", "campaign", "outcome",
           "signup_time", "churn_time"}
_RULE_NAMES = {"field_uniqueness": "has duplicate values (must be unique)", "not_nullable": "has empty values"}
_TRUE = {"1", "true", "yes", "y", "t", "churn", "churned", "cancelled", "canceled"}
_FALSE = {"0", "false", "no", "n", "f", "stay", "stayed", "retained", "active"}
PLACEHOLDERS = {"?", "-", "--", "n/a", "na", "none", "null", "nan", "#n/a", "unknown"}
"""Text that means "no value" in exported spreadsheets."""


@dataclass(frozen=True)
class Problem:
    table: str
    column: str
    """The column as the user's file names it."""
    rule: str
    rows: list[Any]
    """0-based positions in the source (``where`` turns them into file lines or row numbers)."""
    values: list[Any]
    count: int
    kind: str = "table"
    """``csv``: rows are shown as file lines (header = line 1); otherwise "row N" (1 = first row)."""

    def where(self, row: Any) -> str:
        if not isinstance(row, (int, np.integer)):
            return f"row {row}"
        return f"line {row + 2}" if self.kind == "csv" else f"row {row + 1}"

    def __str__(self) -> str:
        head = f"{self.table}: " + (self.rule if self.column == "*" else f"column '{self.column}' {self.rule}")
        if not self.rows:
            return head
        shown = ", ".join(f"{self.where(r)}: {_show(v)}" for r, v in zip(self.rows, self.values, strict=False))
        return f"{head} — {self.count} row(s), e.g. {shown}" if self.count else f"{head} — e.g. {shown}"


def _show(value: Any) -> str:
    """A value as the user would write it: ``'2031-01-01'``, not ``Timestamp('2031-01-01 00:00:00')``."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return repr("<empty>")  # (an empty cell, not ``nan``)
    if isinstance(value, pd.Timestamp):
        return repr(str(value.date()) if value == value.normalize() else str(value))
    return repr(value)


class DataValidationError(ChurnflowError, ValueError):
    """The input data break the contract; ``problems`` lists every broken rule."""

    def __init__(self, problems: list[Problem], hint: str = "") -> None:
        self.problems = problems
        self.latest_event: pd.Timestamp | None = None
        """A partition's latest event time (the Dask engine checks ``data.end_date`` on all)."""
        lines = [f"input data failed validation ({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems]
        if hint or any(p.count for p in problems):
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
    notes: list[str] = field(default_factory=list)
    """What the user must hear although nothing stopped: columns left out as personal data,
    optional columns used because the file has a column of their default name."""
    latest_event: pd.Timestamp | None = None
    """A partition's latest event time before invalid rows were dropped, when ``data.end_date`` is
    declared: the Dask engine checks the declared end against every partition's (one check)."""

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


def parse_amounts(values: pd.Series) -> pd.Series:
    """Amounts as float: numbers as they are; text such as "12.50", "$1,200.00", "€ 30" or "30 €" too.
    A comma is read as a thousands separator only in groups of three ("1,200"), never as a decimal
    point ("12,50" is not a number and is reported), so no amount is silently scaled."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    text = (values.astype("string").str.strip().str.replace(r"^([-+]?)\s*[$€£]\s*", r"\1", regex=True)
            .str.replace(r"\s*[$€£]$", "", regex=True))
    grouped = text.str.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?").fillna(False).astype(bool)
    text = text.where(~grouped, text.str.replace(",", "", regex=False))
    return pd.to_numeric(text, errors="coerce").astype("float64")


def clean_ids(ids: pd.Series, as_text: bool = False) -> pd.Series:
    """Ids as written: text is trimmed (blank = missing), whole floats (1.0 from a blank) are ints.

    This is the one declared way ids are compared across tables: numbers when every table
    stores them as numbers, otherwise text exactly as written (``as_text``; whole numbers without
    decimals). So ``7`` matches ``'7'`` but not ``'007'``: leading zeros are part of an identifier,
    and a mismatch is reported, never fixed by guessing.
    """
    if pd.api.types.is_float_dtype(ids):
        finite = ids.dropna()
        if (finite == finite.round()).all():
            ids = ids.astype("Int64")
    if (pd.api.types.is_numeric_dtype(ids) or pd.api.types.is_bool_dtype(ids)) and not as_text:
        return ids
    text = ids.astype("str").str.strip()  # pandas' default text dtype: fast, blanks stay missing
    return text.where(text != "")


def compare_ids_as_text(id_dtypes: Iterable[Any]) -> bool:
    """Compare ids as text unless every table stores them as numbers (given each table's id dtype;
    the Dask engine decides it once for all partitions from the sources' dtypes)."""
    return not all(pd.api.types.is_numeric_dtype(dtype) for dtype in id_dtypes)


def _ids_as_text(raw: dict[str, pd.DataFrame | None], sources: dict[str, _Source]) -> bool:
    return compare_ids_as_text(frame[sources[k].columns["customer_id"]].dtype
                               for k, frame in raw.items() if frame is not None)


@dataclass
class _Source:
    """One input table: how errors name it, how they count rows, the columns it maps."""

    label: str
    kind: str
    columns: dict[str, str]
    """Canonical name → the user's column name."""
    key: str = ""
    """``customers``, ``events`` or ``contacts``."""

    def user(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)

    def problem(self, column: str, rule: str, bad: pd.Series) -> Problem:
        head = bad.head(MAX_EXAMPLES)
        rows = [int(i) if isinstance(i, (int, np.integer)) else i for i in head.index]
        return Problem(self.label, column, rule, rows, head.tolist(), int(len(bad)), self.kind)

    def mapped(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The mapped columns under canonical names (other user columns dropped)."""
        # A column selection, not a dict of Series: the dict form copies every column into new blocks.
        return raw[list(self.columns.values())].set_axis(list(self.columns), axis=1)


@dataclass
class _Run:
    """Problems found so far and rows dropped, shared by the per-table steps of one validation."""

    settings: Settings
    ids_as_text: bool = False
    decided: Decisions | None = None
    part: bool = False
    problems: list[Problem] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    latest_event: pd.Timestamp | None = None

    @property
    def drop(self) -> bool:
        return self.settings.data.drop_invalid_rows

    def report(self, src: _Source, canonical: str, rule: str, bad: pd.Series) -> None:
        """A row-level problem: stop the load, or drop the rows when data.drop_invalid_rows is set."""
        problem = src.problem(src.user(canonical), rule, bad)
        if self.drop:
            self.dropped[src.label] = self.dropped.get(src.label, 0) + len(bad)
            log.warning("dropping rows: %s", problem)
        else:
            self.problems.append(problem)

    def dates(self, frame: pd.DataFrame, src: _Source, canonical: str, required: bool = False) -> pd.DataFrame:
        """Parse one date column in place (one format per column); bad rows reported or dropped."""
        raw, user, d = frame[canonical], src.user(canonical), self.settings.data
        fmt = d.date_formats.get(user, d.date_format)
        zones = self.decided.zones.get((src.key, user)) if self.decided else None
        decided = self.decided if self.decided and not fmt else Decisions()
        facts, numbers = decided.day_month.get((src.key, user)), decided.numbers.get((src.key, user))
        try:  # the day/month order or the numbers' unit decided for the whole column (Dask), or here
            check_zones(zones or ZoneFacts())  # mixed time zones in the whole column (Dask)
            dayfirst = day_month_order(facts, d.dayfirst) if facts and facts.values else d.dayfirst
            parsed = parse_dates(raw, fmt, dayfirst, number_unit(numbers) if numbers and numbers.present else "")
        except DateFormatError as exc:
            self.problems.append(replace(src.problem(user, exc.reason, exc.examples), count=0))
            return frame
        if pd.api.types.is_datetime64_any_dtype(raw):  # dates already: the missing ones stay missing, others
            blank = raw.isna()                           # fail only out of datetime64[ns]'s range
            unit = raw.dtype.unit if isinstance(raw.dtype, pd.DatetimeTZDtype) else np.datetime_data(raw.dtype)[0]
            unparsable = None if unit == "ns" else parsed.isna() & ~blank
        else:
            blank = raw.isna() | (raw.astype("string").str.strip() == "")
            unparsable = parsed.isna() & ~blank
        if required and blank.any():
            self.report(src, canonical, "has empty dates", raw[blank].astype("string").fillna("<empty>"))
        if unparsable is not None and unparsable.any():
            self._unparsable(src, canonical, raw[unparsable], fmt)
        frame = frame.assign(**{canonical: parsed})
        bad = [b for b in (unparsable, blank if required else None) if b is not None]
        return frame.loc[~np.logical_or.reduce(bad)] if self.drop and bad else frame

    def _unparsable(self, src: _Source, canonical: str, bad: pd.Series, fmt: str) -> None:
        """Dates that could not be read; placeholder years (``0001-01-01``, ``9999-12-31``) apart,
        with their own fix."""
        far = out_of_range(bad).to_numpy()
        if far.any():
            self.report(src, canonical, "has dates out of range (years before 1678 or after 2262, such as "
                                        "0001-01-01 or 9999-12-31 written for 'unknown' or 'never'): leave "
                                        "those cells empty", bad[far])
        if not far.all():
            rule = f"has dates that do not match {fmt!r}" if fmt else "has dates that cannot be parsed"
            self.report(src, canonical, rule, bad[~far])

    def validate(self, frame: pd.DataFrame, schema: pa.DataFrameSchema, src: _Source) -> pd.DataFrame:
        """Run a pandera schema lazily; every failure becomes a Problem in the user's column names."""
        try:
            schema.validate(frame, lazy=True, inplace=True)  # nothing is coerced: no copy of the frame
            return frame
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases
            found = []
            for (column, check), group in cases.groupby(["column", "check"], sort=True, dropna=False):
                rows = group["index"].dropna()
                rule = _RULE_NAMES.get(str(check), str(check))
                found.append(Problem(src.label, src.user(str(column)), rule, rows.head(MAX_EXAMPLES).astype(int).tolist(),
                                     group["failure_case"].head(MAX_EXAMPLES).tolist(), int(len(group)), src.kind))
            bad_index = pd.Index(cases["index"].dropna().astype(int).unique())
            if self.drop and all(p.rows for p in found):
                self.dropped[src.label] = self.dropped.get(src.label, 0) + len(bad_index)
                for p in found:
                    log.warning("dropping rows: %s", p)
                return frame.drop(index=bad_index)
            self.problems.extend(found)
            return frame


# ---- validation --------------------------------------------------------------------------------


def _unknown_id_check(known: pd.Series, customers_label: str) -> pa.Check:
    return pa.Check(lambda s: _known_or_missing(s, pd.Index(known)), ignore_na=False,  # (missing ids pass)
                    name=f"refers to an unknown customer (not in {customers_label})")


def _known_or_missing(ids: pd.Series, known: pd.Index) -> pd.Series:
    """Whether each id is a known customer's or missing (missing ones break the not-empty rule).

    Integer ids (never missing) are looked up once per run of equal ids and repeated: a
    customer's events are usually adjacent, a twentieth of the lookups at 20 events each.
    """
    values = ids.to_numpy()
    if values.dtype.kind not in "iu" or len(values) < 2:
        return ids.isin(known) | ids.isna()
    starts = compiled.run_starts(values)
    found = pd.Series(values[starts]).isin(known).to_numpy()
    if found.all():
        return pd.Series(np.ones(len(values), dtype=bool), index=ids.index)
    return pd.Series(np.repeat(found, np.diff(np.r_[starts, len(values)])), index=ids.index)


def _before(limit: pd.Timestamp) -> Callable[[pd.Series], pd.Series]:
    """A check that dates are before ``limit`` (missing dates pass: ``~(s >= limit)``).

    Datetimes are compared as integers, missing ones (the smallest integer) passing by
    themselves: pandas' datetime comparison masks them in two more passes over the column, and
    pandera's ``ignore_na`` in another (these checks are made with ``ignore_na=False``)."""
    def check(s: pd.Series) -> pd.Series:
        values = s.to_numpy()
        if values.dtype.kind != "M":
            return ~(s >= limit)
        return pd.Series(values.view(np.int64) < limit.to_datetime64().astype(values.dtype).view(np.int64),
                         index=s.index)
    return check


def _not_negative(s: pd.Series) -> pd.Series:
    """``~(s < 0)`` (missing amounts pass) in NumPy."""
    return pd.Series(~(s.to_numpy() < 0), index=s.index)


def _events(raw: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """Events under canonical names: parsed times, numeric amounts, categorical types."""
    ev = src.mapped(raw)
    ev["customer_id"] = clean_ids(ev["customer_id"], run.ids_as_text)
    ev = run.dates(ev, src, "event_time", required=True)
    if "amount" in ev:
        before = ev["amount"]
        ev["amount"] = parse_amounts(before)
        bad = ev["amount"].isna() & before.notna()  # numbers: never bad; text only where unparsed
        if bad.any():  # (a masked assignment costs as much when nothing is masked)
            bad[bad] = before[bad].astype("string").str.strip() != ""
        if bad.any():
            run.report(src, "amount", "is not a number (write decimals with a point, 12.50, or set data.decimal = "
                                      "\",\" for a file written 12,50; leave unknown amounts empty)", before[bad])
            if run.drop:
                ev = ev.loc[~bad]
    if "event_type" in ev:
        ev["event_type"] = event_type_categories(ev["event_type"])
    return ev


def event_type_categories(types: pd.Series) -> pd.Series:
    """Event types as a categorical of text (sorted categories), empty ones ``unknown``.

    Built from ``pd.factorize`` codes: ``astype("category")`` on Arrow-backed text costs four
    times as long at 20M rows. The few distinct types are sorted and ``unknown`` added after
    factorizing, and the codes renumbered through a lookup: sorting or filling 20M strings
    costs as much again. Other dtypes (numeric type codes) become text first, so a type is
    always a word.
    """
    if not pd.api.types.is_string_dtype(types) or isinstance(types.dtype, pd.CategoricalDtype):
        types = types.astype("string[pyarrow]")
    codes, levels = factorize_text(types)  # -1: missing
    if "unknown" not in levels and (codes < 0).any():
        levels = levels.append(pd.Index(["unknown"], dtype=levels.dtype))
    order = levels.argsort()
    new_code = np.empty(len(levels), dtype=np.int8 if len(levels) < 128 else np.int32)  # few types: small codes
    new_code[order] = np.arange(len(levels))
    lookup = np.append(new_code, new_code[levels.get_loc("unknown")] if "unknown" in levels else -1).astype(new_code.dtype)
    categories = levels[order]
    # In place when the codes are already as small (int8 from the compiled numbering, always our own array).
    renumbered = codes if codes.dtype == lookup.dtype and codes.flags.writeable else np.empty(len(codes), lookup.dtype)
    compiled.renumber(codes, lookup, renumbered)
    # (validate=False: every code comes from ``lookup``, within the categories or -1)
    categorical = pd.Categorical.from_codes(renumbered, categories=categories, validate=False)
    return pd.Series(categorical, index=types.index, name=types.name)


def _customers(raw: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """Customers: canonical reserved columns, parsed dates and label; other columns kept as attributes."""
    reserved = set(src.columns)
    clashes = [c for c in raw.columns if c in TABLE_COLUMNS["customers"] and src.columns.get(c) != c]
    cu = raw.drop(columns=clashes).rename(columns={u: c for c, u in src.columns.items()})
    cu["customer_id"] = clean_ids(cu["customer_id"], run.ids_as_text)
    cu = _ids_differing_by_case(cu, src, run)
    for col in ("signup_time", "churn_time"):
        if col in reserved:
            cu = run.dates(cu, src, col)
    if "label" in reserved:
        cu = _labels(cu, src, run)
    cu = _value_column(cu, src, run)
    cu = _placeholder_dates(cu, src, run)
    _label_copies(cu, src, run)
    cu = _left_before_joining(cu, src, run)
    columns = {"customer_id": pa.Column(nullable=False, unique=True, report_duplicates="exclude_first")}
    for col in ("signup_time", "churn_time"):
        if col in reserved and col in cu and cu[col].dtype.kind == "M":
            columns[col] = pa.Column(nullable=True, checks=_not_in_future("customers file"))
    schema = pa.DataFrameSchema(columns)
    cu = run.validate(cu, schema, src)
    if run.drop and cu["customer_id"].duplicated().any():
        dup = cu["customer_id"].duplicated()
        run.dropped[src.label] = run.dropped.get(src.label, 0) + int(dup.sum())
        cu = cu.loc[~dup]
    return cu


def _left_before_joining(cu: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """Churn dates before signup dates, reported on the churn date column alone (a check on the
    whole table would blame every column of those rows)."""
    if not {"signup_time", "churn_time"} <= set(cu) or cu["churn_time"].dtype.kind != "M" \
            or cu["signup_time"].dtype.kind != "M":
        return cu
    bad = (cu["churn_time"] < cu["signup_time"]).to_numpy()
    if bad.any():
        run.report(src, "churn_time", f"has dates before '{src.user('signup_time')}' (a customer cannot "
                   "leave before joining)",
                   cu["churn_time"][bad])
    return cu.loc[~bad] if run.drop and bad.any() else cu


PLACEHOLDER_DAY = pd.Timestamp("1900-01-01")
"""Signup and churn dates on or before it are a system's "unknown" (SQL Server's and Excel's
zero dates), not a customer's: a tenure of 124 years would be a feature."""


def _placeholder_dates(cu: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """Signup and churn dates on or before ``PLACEHOLDER_DAY``, reported (or dropped) with the fix."""
    for col in ("signup_time", "churn_time"):
        if col not in cu or cu[col].dtype.kind != "M":
            continue
        early = (cu[col] <= PLACEHOLDER_DAY).to_numpy()
        if early.any():
            run.report(src, col, "has placeholder dates (1900-01-01 or earlier, a system's way of writing "
                                 "'unknown'); leave unknown dates empty", cu[col][early])
            cu = cu.loc[~early] if run.drop else cu
    return cu


LEAK_MIN_CUSTOMERS, LEAK_MIN_CLASS, LEAK_MAX_LEVELS = 50, 10, 50
"""A column gives the churn flag away only among enough customers of each kind, in few values
(an identifier, one value per customer, goes with one flag each trivially)."""


def _label_copies(cu: pd.DataFrame, src: _Source, run: _Run) -> None:
    """Attribute columns whose every value goes with a single churn flag: a copy of the flag
    ("Churn Label" beside "Churn Value") or a column filled in when a customer left ("Churn
    Reason", blank for the others). As a feature it would leak the answer, and the model would
    look perfect until it met customers who have not left yet. Reported with the fix."""
    if "label" not in cu or run.settings.churn.definition != "label":
        return
    known = cu["label"].notna().to_numpy()
    flags = cu["label"].to_numpy()[known].astype(np.int64)
    churners = int(flags.sum())
    if len(flags) < LEAK_MIN_CUSTOMERS or min(churners, len(flags) - churners) < LEAK_MIN_CLASS:
        return
    declared = set(run.settings.pii_columns) | set(run.settings.features.exclude)
    for col in [c for c in cu.columns if c not in TABLE_COLUMNS["customers"] and c not in declared]:
        codes, levels = pd.factorize(cu[col].iloc[np.flatnonzero(known)], use_na_sentinel=False)
        if not 2 <= len(levels) <= min(LEAK_MAX_LEVELS, len(flags) // 5):
            continue
        rows, churned = np.bincount(codes, minlength=len(levels)), np.bincount(codes, flags, minlength=len(levels))
        if ((churned == 0) | (churned == rows)).all():
            first = pd.Series(codes).drop_duplicates().index[:MAX_EXAMPLES]  # one row per value
            examples = cu[col].iloc[np.flatnonzero(known)[first]]
            run.problems.append(replace(src.problem(col, (
                "gives the churn flag away: each of its values goes with a single flag in every row (a copy of "
                "the flag, or filled in when a customer left), so as a feature it would leak the answer; "
                f"add it to features.exclude = [\"{col}\"]"), examples), count=0))


def _labels(cu: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """The churn flag as 0/1; empty flags and other values are reported apart (both stop the load)."""
    before = cu["label"]
    cu["label"] = parse_flag(before)
    bad = cu["label"].isna()
    empty = before.isna() | (before.astype("string").str.strip() == "")
    if (bad & empty).any():
        run.report(src, "label", "has empty churn flags (every customer needs 0/1, true/false or yes/no)",
                   before[bad & empty].astype("string").fillna("<empty>"))
    if (bad & ~empty).any():
        run.report(src, "label", "is not a churn flag (0/1, true/false, yes/no)", before[bad & ~empty])
    cu = cu.loc[~bad] if run.drop else cu
    if not cu["label"].isna().any():
        cu["label"] = cu["label"].astype("int8")
    return cu


def _value_column(cu: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """``features.value_column`` as numbers: placeholders ("N/A", "-", "?") are missing values,
    anything else that is not a number is reported. Without this a few "?" make the column text,
    and value at risk silently disappears."""
    name = run.settings.features.value_column
    if not name or name not in cu or pd.api.types.is_numeric_dtype(cu[name]):
        return cu
    before = cu[name]
    text = before.astype("string").str.strip()
    missing = text.isna() | text.str.lower().isin(PLACEHOLDERS)
    parsed = parse_amounts(text.mask(missing))
    bad = parsed.isna() & ~missing
    if bad.any():
        run.report(src, name, "is not a number (features.value_column names it: a monthly value such as "
                              "12.50; leave unknown values empty)", before[bad])
        cu = cu.loc[~bad] if run.drop else cu
        parsed = parsed.loc[cu.index]
    return cu.assign(**{name: parsed})


def _ids_differing_by_case(cu: pd.DataFrame, src: _Source, run: _Run) -> pd.DataFrame:
    """Text ids that differ only in upper/lower case (``AB12`` and ``ab12``) are one customer
    exported twice, or two customers a CRM would confuse: either way the user must decide."""
    ids = cu["customer_id"]
    if pd.api.types.is_numeric_dtype(ids):
        return cu
    folded = ids.str.casefold()
    clash = folded.duplicated(keep=False) & ~ids.duplicated(keep=False) & ids.notna()
    if not clash.any():
        return cu
    run.report(src, "customer_id", "has ids that differ only in upper/lower case (ids are compared exactly as "
                                   "written: if they are one customer, write the id the same way everywhere)",
               ids[clash])
    return cu.loc[~clash] if run.drop else cu


def _not_in_future(label: str) -> pa.Check:
    tomorrow = pd.Timestamp.today().normalize() + pd.Timedelta(days=1)
    return pa.Check(_before(tomorrow), ignore_na=False, name=f"has dates in the future (after {(tomorrow - pd.Timedelta(days=1)).date()}): "
                    f"a wrong year, or day and month swapped? Fix them in the {label}")


def _check_events(ev: pd.DataFrame, cu: pd.DataFrame, src: _Source, customers: _Source, run: _Run) -> pd.DataFrame:
    """Events refer to known customers, end by the declared end date, and have no negative amounts."""
    end = pd.Timestamp(run.settings.data.end_date) if run.settings.data.end_date else None
    cols: dict[str, pa.Column] = {"customer_id": pa.Column(nullable=False, checks=_unknown_id_check(
        cu["customer_id"], customers.label))}
    if ev["event_time"].dtype.kind == "M":
        checks = [_not_in_future(f"file (or set data.date_format for {src.user('event_time')!r})")]
        if end is not None:
            checks.append(pa.Check(_before(end + pd.Timedelta(days=1)), ignore_na=False,
                                   name=f"is after the declared end of the data ({end.date()}; data.end_date)"))
            if run.part:  # one partition's last event is not the data's: checked once, on all
                run.latest_event = last_time(ev["event_time"])
            elif problem := declared_end_problem(last_time(ev["event_time"]), run.settings, src.label,
                                                 src.user("event_time")):
                run.problems.append(problem)
        cols["event_time"] = pa.Column(nullable=True, checks=checks)
    if "amount" in ev and not run.settings.data.allow_negative_amounts:
        cols["amount"] = pa.Column(nullable=True, checks=pa.Check(
            _not_negative, ignore_na=False, name="must not be negative (set data.allow_negative_amounts for refunds)"))
    return run.validate(ev, pa.DataFrameSchema(cols), src)


def declared_end_problem(last: pd.Timestamp, settings: Settings, label: str, column: str) -> Problem | None:
    """A declared end long after the last event makes every customer look gone (inactivity)."""
    end = pd.Timestamp(settings.data.end_date)
    horizon = settings.churn.horizon_days
    if settings.churn.definition != "inactivity" or pd.isna(last) or (end - last).days <= horizon:
        return None
    return Problem(label, column, (
        f"ends on {last.date()}, {(end - last).days} days before data.end_date ({end.date()}), more than "
        f"churn.horizon_days ({horizon}): every customer would look churned; set data.end_date to the day your "
        "extract ends, or leave it empty (the last event's day)"), [], [], 0)


def _contacts(raw: pd.DataFrame, cu: pd.DataFrame, src: _Source, customers: _Source, run: _Run) -> pd.DataFrame:
    """Past retention contacts: parsed times, known customers, campaign/outcome as text."""
    co = src.mapped(raw)
    co["customer_id"] = clean_ids(co["customer_id"], run.ids_as_text)
    co = run.dates(co, src, "contact_time", required=True)
    columns = {"customer_id": pa.Column(checks=_unknown_id_check(cu["customer_id"], customers.label))}
    if co["contact_time"].dtype.kind == "M":
        columns["contact_time"] = pa.Column(nullable=True, checks=_not_in_future("contacts file"))
    co = run.validate(co, pa.DataFrameSchema(columns), src)
    for col in ("campaign", "outcome"):
        if col in co:
            co[col] = co[col].astype("string").fillna("unknown").astype(str)
    return co


def loose_id(value: object) -> str:
    """An id as the leading-zero hint compares it: no decimals, leading zeros or case."""
    return re.sub(r"\.0+$", "", str(value).strip()).lstrip("0").casefold()


def loose_ids(ids: pd.Series) -> pd.Series:
    """:func:`loose_id` of every id at once."""
    return ids.astype(str).str.strip().str.replace(r"\.0+$", "", regex=True).str.lstrip("0").str.casefold()


def unknown_id_values(problems: Iterable[Problem]) -> set[str]:
    """The unknown ids the problems show, as :func:`loose_id` writes them."""
    return {loose_id(v) for p in problems if "unknown customer" in p.rule for v in p.values if v is not None}


def id_hint(problems: list[Problem], ids: pd.Series) -> list[Problem]:
    """Unknown ids that match a customer once leading zeros are ignored: say so, name both ways
    (``ids``: the customers' ids in source order; only those :func:`unknown_id_values` names matter)."""
    known = dict(zip(loose_ids(ids.dropna()), ids.dropna(), strict=True))
    out = []
    for p in problems:
        pairs = [(v, known[loose_id(v)]) for v in p.values if "unknown customer" in p.rule
                 and v is not None and loose_id(v) in known]
        if pairs:
            ours, theirs = pairs[0]
            p = Problem(p.table, p.column, p.rule + f": ids are compared as text exactly as written, and {ours!r} here "
                        f"is {theirs!r} in the customers table; write the ids the same way in both (keep leading "
                        "zeros and upper/lower case, no decimals; or export both as text)", p.rows, p.values, p.count, p.kind)
        out.append(p)
    return out


def _settings_problems(raw: dict[str, pd.DataFrame | None], sources: dict[str, _Source], settings: Settings,
                       require_label: bool, personal: dict[str, str] | None = None
                       ) -> tuple[list[Problem], dict[str, str]]:
    """Settings naming columns the data lack; and the undeclared columns that look like personal
    data (column → why; ``personal``: decided already), which the run leaves out."""
    issues = []
    for key, frame in raw.items():
        if frame is not None:
            mapping, missing = column_mapping(key, [str(c) for c in frame.columns], settings, require_label)
            sources[key].columns = mapping
            issues += missing
    customers = raw["customers"]
    issues += customer_setting_issues(None if customers is None else [str(c) for c in customers.columns], settings)
    if customers is None or issues:
        personal = {}
    elif personal is None:
        personal = undeclared_personal_columns(customers, sources["customers"].columns, settings)
    if personal:
        contact = set(customer_setting_columns(settings).get("serving.contact_fields", []))
        issues += [personal_contact_field_issue(c, why) for c, why in personal.items() if c in contact]
    return [Problem(sources[i.table].label, i.column, i.rule, [], [], 0) for i in issues], personal


def _default_name_notes(sources: dict[str, _Source], settings: Settings) -> list[str]:
    """Optional columns found under their default name (``amount`` in an events file): used,
    and said, so a column that means something else is not used silently."""
    cols = settings.data.columns
    return [f"{src.label}: column '{user}' is used as data.columns.{canonical} (its default name); if it "
            f"means something else, set data.columns.{canonical} = \"\""
            for src in sources.values() for canonical, user in src.columns.items()
            if canonical not in ("customer_id", "event_time", "contact_time") and not cols.is_explicit(canonical)]


def _repeated_headers(raw: dict[str, pd.DataFrame | None], sources: dict[str, _Source], run: _Run) -> None:
    """Lines of a CSV repeating its header (exports pasted together) are named as such, once,
    rather than as a bad date, a bad number and an unknown customer on the same line."""
    for key, frame in raw.items():
        src = sources[key]
        if frame is None or src.kind != "csv" or pd.api.types.is_numeric_dtype(frame[src.user("customer_id")]):
            continue
        ids = frame[src.user("customer_id")]
        repeated = (ids.astype("string").str.strip() == src.user("customer_id")).fillna(False).astype(bool)
        if repeated.any():
            run.report(src, "customer_id", "repeats the header row (several exports joined?); delete those "
                                           "lines", ids[repeated])
            raw[key] = frame.loc[~repeated]


def validate_tables(
    customers: pd.DataFrame | None,
    events: pd.DataFrame | None,
    contacts: pd.DataFrame | None,
    settings: Settings,
    names: dict[str, str] | None = None,
    require_label: bool = True,
    kinds: dict[str, str] | None = None,
    part: bool = False,
    decided: Decisions | None = None,
) -> Tables:
    """Map, parse and validate raw tables into canonical ``Tables`` (pure: no I/O).

    ``require_label=False`` is for scoring snapshot tables: next week's customers table has no
    churn flag yet, so a missing label column is expected rather than an error. ``kinds`` says
    which sources are CSV files (problems then cite file lines). ``part``: the tables are one
    partition of larger sources (the Dask engine), where an empty table is normal. ``decided``:
    the decisions taken from columns' values, made once for all partitions (:func:`decide`).
    """
    names, kinds = names or {}, kinds or {}
    raw = {"customers": customers, "events": events, "contacts": contacts}
    sources = {k: _Source(names.get(k, k), kinds.get(k, "table"), {}, k) for k in raw}
    for key, frame in raw.items():
        if frame is not None and frame.empty and not part:
            raise DataValidationError([Problem(sources[key].label, "*", "table is empty", [], [], 0)],
                                      hint="The source has no rows; check the path, table name or query.")
    if customers is None and events is None:
        raise DataValidationError([Problem("customers", "*", "no customers or events source configured", [], [], 0)],
                                  hint="Set data.customers and/or data.events in your settings.")
    found, personal = _settings_problems(raw, sources, settings, require_label, decided and decided.personal)
    if found:
        raise DataValidationError(found, hint="Fix the settings named above (or the file's header), then run "
                                             "`churnflow validate` again.")
    notes = [personal_data_note(sources["customers"].label, c, why) for c, why in personal.items()] + _default_name_notes(sources, settings)
    if personal:  # left out here, before anything else sees their values
        raw["customers"] = customers = customers.drop(columns=list(personal))

    run = _Run(settings, ids_as_text=_ids_as_text(raw, sources), decided=decided, part=part)
    _repeated_headers(raw, sources, run)
    customers, events, contacts = raw["customers"], raw["events"], raw["contacts"]
    ev = _events(events, sources["events"], run) if events is not None else None
    if customers is None:
        assert ev is not None
        cu = pd.DataFrame({"customer_id": pd.unique(ev["customer_id"].dropna())})
        sources["customers"].label = f"{sources['events'].label} (customers are its distinct ids)"
    else:
        cu = _customers(customers, sources["customers"], run)
    if ev is not None:
        ev = _check_events(ev, cu, sources["events"], sources["customers"], run)
    co = _contacts(contacts, cu, sources["contacts"], sources["customers"], run) if contacts is not None else None
    if run.problems:
        # (a partition's customers are not all the customers: the Dask engine hints once, after)
        error = DataValidationError(run.problems if part else id_hint(run.problems, cu["customer_id"]))
        error.latest_event = run.latest_event
        raise error
    tables = _finish(cu, ev, co, settings, run.dropped, sort_customers=customers is None)
    tables.notes = notes  # said by the caller (the CLI, the validate task's log)
    tables.latest_event = run.latest_event
    return tables


# ---- decisions from values, made once for data in parts (the Dask engine) -------------------------


@dataclass(frozen=True)
class Decisions:
    """What ``validate_tables`` decides from columns' values rather than from rows one by one.

    The local engine decides them on each whole column; the Dask engine validates partitions,
    so it decides them once from every partition's :class:`ValueFacts` and passes them in, and
    a partition then stops, leaves out and parses exactly as the whole table would.
    """

    personal: dict[str, str] = field(default_factory=dict)
    """Undeclared customers columns left out as personal data → why."""
    day_month: dict[tuple[str, str], DayMonthFacts] = field(default_factory=dict)
    """(table, column) → the day/month facts of the whole column, which settle its order."""
    numbers: dict[tuple[str, str], NumberFacts] = field(default_factory=dict)
    """(table, column) → the facts of a numeric date column, which settle its unit."""
    zones: dict[tuple[str, str], ZoneFacts] = field(default_factory=dict)
    """(table, column) → the zone facts of a text date column with zoned values: a column the
    whole data mix is refused in every part, with the whole column's examples."""

    def agrees_with(self, whole: Decisions, dayfirst: bool | None) -> bool:
        """Whether a part validated with these decisions validates as with ``whole``'s: the same
        personal columns, and each date column's order or unit (or refusal) the same wherever this
        part has such values (one without them needs it only when the column is refused)."""
        if self.personal != whole.personal:
            return False
        if any(facts.mixed and self.zones.get(key) != facts for key, facts in whole.zones.items()):
            return False  # refused with other examples, or not at all
        for key, facts in whole.day_month.items():
            mine = self.day_month.get(key, DayMonthFacts())
            if facts.values and not _same(mine.values, _outcome(day_month_order, mine, dayfirst),
                                          _outcome(day_month_order, facts, dayfirst)):
                return False
        for key, numbers in whole.numbers.items():
            counted = self.numbers.get(key, NumberFacts())
            if numbers.present and not _same(counted.present, _outcome(number_unit, counted),
                                             _outcome(number_unit, numbers)):
                return False
        return True


def _outcome(decide: Any, *facts: Any) -> object:
    """A decision, or the refusal's reason and rows."""
    try:
        return decide(*facts)
    except DateFormatError as exc:
        return exc.reason, exc.examples.index.tolist()


def _same(has_values: object, mine: object, whole: object) -> bool:
    """A part's decision agrees with the whole's; a part without the values needs none, unless
    the whole column is refused (then the part must refuse it too)."""
    return mine == whole or (not has_values and not isinstance(whole, tuple))


@dataclass(frozen=True)
class ValueFacts:
    """What the decisions need from a part of the data: each screened customers column's sample
    (it stays on the worker that decides), each text date column's day/month and time-zone
    facts, and each numeric date column's unit facts."""

    samples: dict[str, pd.Series] = field(default_factory=dict)
    day_month: dict[tuple[str, str], DayMonthFacts] = field(default_factory=dict)
    numbers: dict[tuple[str, str], NumberFacts] = field(default_factory=dict)
    zones: dict[tuple[str, str], ZoneFacts] = field(default_factory=dict)


def value_facts(customers: pd.DataFrame | None, events: pd.DataFrame | None, contacts: pd.DataFrame | None,
                settings: Settings, require_label: bool = True) -> ValueFacts:
    """The facts of raw tables (a partition's, in source order) that :func:`decide` needs."""
    d, samples, day_month, numbers, zones = settings.data, {}, {}, {}, {}
    for key, frame in {"customers": customers, "events": events, "contacts": contacts}.items():
        if frame is None:
            continue
        mapping, _ = column_mapping(key, [str(c) for c in frame.columns], settings, require_label)
        for canonical in ("signup_time", "churn_time", "event_time", "contact_time"):
            user = mapping.get(canonical)
            if not user or user not in frame:
                continue
            values = frame[user]
            if (found := zone_facts(values)).zoned or found.naive:
                zones[(key, user)] = found
            if d.date_formats.get(user, d.date_format):
                continue
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_datetime64_any_dtype(values):
                numbers[(key, user)] = NumberFacts.of(pd.to_numeric(values, errors="coerce"))
            else:
                day_month[(key, user)] = day_month_facts(values)
        if key == "customers":
            samples = {str(c): s for c, s in screen_samples(frame, screened_columns(frame, mapping, settings)).items()}
    return ValueFacts(samples, day_month, numbers, zones)


def merge_facts(parts: Iterable[ValueFacts]) -> ValueFacts:
    """The facts of the whole data from its parts' (samples re-sampled, day/month facts merged)."""
    parts = list(parts)
    columns = list(dict.fromkeys(c for p in parts for c in p.samples))
    keys = list(dict.fromkeys(k for p in parts for k in p.day_month))
    numbers = list(dict.fromkeys(k for p in parts for k in p.numbers))
    zoned = list(dict.fromkeys(k for p in parts for k in p.zones))
    return ValueFacts({c: screen_sample(pd.concat([p.samples[c] for p in parts if c in p.samples])) for c in columns},
                      {k: DayMonthFacts.merged(p.day_month[k] for p in parts if k in p.day_month) for k in keys},
                      {k: NumberFacts.merged(p.numbers[k] for p in parts if k in p.numbers) for k in numbers},
                      {k: ZoneFacts.merged(p.zones[k] for p in parts if k in p.zones) for k in zoned})


def decide(facts: ValueFacts) -> Decisions:
    """The decisions the facts settle (the personal-data screen runs on the samples here)."""
    personal = {c: reason for c, sample in facts.samples.items() if (reason := personal_data_reason(sample, c))}
    return Decisions(personal, dict(facts.day_month), dict(facts.numbers), dict(facts.zones))


def _finish(cu: pd.DataFrame, ev: pd.DataFrame | None, co: pd.DataFrame | None, settings: Settings,
            dropped: dict[str, int], sort_customers: bool) -> Tables:
    declared = pd.Timestamp(settings.data.end_date) if settings.data.end_date else None
    if ev is not None and len(ev):
        end = declared if declared is not None else last_time(ev["event_time"]).normalize()
    else:
        end = declared if declared is not None else pd.Timestamp.today().normalize()
    if ev is not None:
        ev = _sorted_by_customer_and_time(ev)
    if sort_customers:
        cu = cu.sort_values("customer_id").reset_index(drop=True)
    for table, n in dropped.items():
        log.warning("dropped %d invalid row(s) from %s (data.drop_invalid_rows = true)", n, table)
    return Tables(customers=cu.reset_index(drop=True), events=ev, contacts=co, end_date=end, dropped_rows=dropped)


def last_time(times: pd.Series) -> pd.Timestamp:
    """The latest of ``times`` (NaT when none), as ``times.max()``: naive datetimes as one integer
    max, which skips NaT (the smallest integer) by itself, where pandas masks NaT in more passes."""
    values = times.to_numpy()
    if values.dtype.kind != "M" or not len(values):
        return times.max()
    return pd.Timestamp(values.view(np.int64).max().view(values.dtype))


def _sorted_by_customer_and_time(ev: pd.DataFrame) -> pd.DataFrame:
    """Events ordered by customer, then time (what feature building relies on); a no-op when
    the source is already in that order, as exports usually are. Integer ids are checked for
    that order as they are (their sorted codes are in the same order); other ids through codes."""
    times = ev["event_time"].to_numpy().view("int64")
    ids = ev["customer_id"].to_numpy()
    if len(ev) < 2 or (ids.dtype.kind in "iu" and _in_order(ids, times)):
        return ev.reset_index(drop=True)
    codes, _ = pd.factorize(ev["customer_id"], sort=True)
    if _in_order(codes, times):
        return ev.reset_index(drop=True)
    order = np.lexsort((times, codes))
    return ev.take(order).reset_index(drop=True)


def _in_order(keys: np.ndarray, times: np.ndarray) -> bool:
    """Whether rows are sorted by ``keys``, then ``times`` (one compiled pass, stopping at the first row out of order)."""
    return compiled.sorted_by_key_and_time(keys, times)


# ---- loading -----------------------------------------------------------------------------------


def source_names(settings: Settings) -> dict[str, str]:
    """How errors name each configured source (file name or database table)."""
    d = settings.data
    return {
        "customers": source_label(d.customers, d.customers_table) if d.customers else "customers",
        "events": source_label(d.events, d.events_table) if d.events else "events",
        "contacts": source_label(d.contacts, d.contacts_table) if d.contacts else "contacts",
    }


def source_kinds(settings: Settings) -> dict[str, str]:
    """Which sources are CSV files (problems cite their file lines) and which are tables."""
    d = settings.data
    return {"customers": source_kind(d.customers), "events": source_kind(d.events), "contacts": source_kind(d.contacts)}


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
    settings.check_sources()
    raw = read_raw_tables(settings) if raw is None else raw
    tables = validate_tables(raw["customers"], raw["events"], raw["contacts"], settings, source_names(settings),
                             require_label=require_label, kinds=source_kinds(settings))
    return cut_at(tables, as_of) if as_of is not None else tables


class AsOfError(ChurnflowError, ValueError):
    """An as-of date the data cannot speak for (after their end)."""


def check_as_of(tables: Tables, as_of: pd.Timestamp) -> None:
    """Refuse an as-of date after the day following the data's end: features would describe
    customers at a time the data know nothing about (every one of them silent since the end),
    which drift or the model would then report as a change in the customers."""
    latest = tables.end_date.normalize() + pd.Timedelta(days=1)
    if pd.Timestamp(as_of) > latest:
        raise AsOfError(f"--as-of {pd.Timestamp(as_of).date()} is after the end of the data ({tables.end_date.date()}, "
                        f"the last event's day or data.end_date): use {latest.date()} or earlier, or leave --as-of "
                        "out; if the data really run later, check the sources are the latest extract")


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
    return Tables(customers=cu, events=ev, contacts=co, end_date=end, dropped_rows=tables.dropped_rows,
                  notes=tables.notes)
