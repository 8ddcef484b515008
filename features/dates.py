"""Date columns parsed one way per column, never guessed row by row.

Each text value is sorted into a format family by its shape (ISO ``2024-11-09 22:23``,
``yyyymmdd``, ``25/03/2024`` day/month-or-month/day, ``2024/03/25``, or a month name). Only
the day/month family is ambiguous: ``04/05/2024`` is 4 May or 5 April. Its order comes from
the column's own values (a first number above 12 proves day first) or from ``data.dayfirst``;
when the values cannot tell, or contradict each other, or the column mixes day/month values
with other formats (an inconsistent export), parsing stops with examples and the fix instead
of moving events by months.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_TIME = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?: ?[AaPp][Mm])?)?"
"""A time of day, 24-hour or with AM/PM (US Excel: ``3/25/2024 10:00:05 PM``)."""
FAMILIES = {
    "ISO": rf"\d{{4}}-\d{{1,2}}-\d{{1,2}}{_TIME}(?: ?(?:Z|[+-]\d{{2}}:?\d{{2}}))?",  # (SQL: ``10:00:00.000 +0000``)
    "yyyymmdd": r"\d{8}",
    # one separator throughout (25/03/2024, 25.03.2024, 25-03-2024), spelled without a backreference
    # so that Arrow's regex engine runs it (7x faster than Python's on a million values)
    "day/month/year": "|".join(rf"\d{{1,2}}{sep}\d{{1,2}}{sep}(?:\d{{4}}|\d{{2}}){_TIME}" for sep in ("/", r"\.", "-")),
    "year/month/day": rf"\d{{4}}[/.]\d{{1,2}}[/.]\d{{1,2}}{_TIME}",
    "month name": r".*[A-Za-z]{3,}.*\d.*|.*\d.*[A-Za-z]{3,}.*",
}
DAY_MONTH = "day/month/year"
SAMPLE = 20_000
"""Values whose format is checked before a column in one unambiguous format is parsed at once."""
EXAMPLE_FIX = 'data.dayfirst = true (25/03/2024 is 25 March) or false (03/25/2024 is 25 March)'


class DateFormatError(ValueError):
    """A column's date format is ambiguous; ``examples`` are the values that show why."""

    def __init__(self, reason: str, examples: pd.Series) -> None:
        super().__init__(reason)
        self.reason = reason
        self.examples = examples


def parse_dates(values: pd.Series, fmt: str = "", dayfirst: bool | None = None, unit: str = "") -> pd.Series:
    """Parse one date column to naive datetime64[ns] (UTC for values with a time zone).

    ``fmt`` (a strftime format) is used as given. Otherwise the format is detected for the whole
    column (see the module docstring); ``DateFormatError`` when it is ambiguous. Values of no
    known format become NaT; the caller reports them. ``unit``: what numbers are (``s``, ``ms``
    or ``yyyymmdd``, :func:`number_unit`), when decided for a whole column of which these are a part.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _ns(values.dt.tz_convert("UTC").dt.tz_localize(None))
    if pd.api.types.is_datetime64_any_dtype(values):
        return _ns(values)
    if pd.api.types.is_numeric_dtype(values):
        return _parse_numbers(values, unit)
    text = _text(values)
    if fmt:
        return _zoned_to_utc(text, format=fmt)
    present = text.dropna()
    spread = present.iloc[:: max(1, len(present) // SAMPLE)]
    seen = [f for f in FAMILIES if (_families(spread) == f).any()]
    if len(seen) == 1 and seen[0] != DAY_MONTH:
        # One unambiguous format in a sample spread over the column: parse every row with it. Only
        # when some row fails is every row classified (a rare second format is then named).
        parsed = _parse_family(text, seen[0], False)
        if not (parsed.isna() & text.notna()).any():
            return parsed
    family = _families(text)
    found = [f for f in FAMILIES if (family == f).any()]
    if DAY_MONTH in found:
        others = text[(family != DAY_MONTH) & family.notna() & (family != "")]
        dayfirst = day_month_order(DayMonthFacts.of(text[family == DAY_MONTH], others), dayfirst)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    for name in found:
        mask = family == name
        out[mask] = _parse_family(text[mask], name, bool(dayfirst))
    return out


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().replace("", pd.NA)


def _parse_numbers(values: pd.Series, unit: str = "") -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    unit = unit or number_unit(NumberFacts.of(numbers))
    if unit in ("s", "ms"):
        return _ns(pd.to_datetime(numbers, unit=unit, errors="coerce"))
    as_text = numbers.round().astype("Int64").astype("string").where(numbers == numbers.round())
    return _ns(pd.to_datetime(as_text, format="%Y%m%d", errors="coerce"))


_UNITS = {"s": (1e9, 1e11), "ms": (1e12, 1e14), "excel": (1, 100_000)}


@dataclass(frozen=True)
class NumberFacts:
    """What a numeric date column's values say about their unit: how many lie in each unit's
    range, and the first three (source row, value) as examples. Parts' facts add up."""

    present: int = 0
    in_range: tuple[int, int, int] = (0, 0, 0)
    """Values in the ranges of ``_UNITS``: Unix seconds, milliseconds, Excel serial days."""
    first: tuple[tuple[Any, Any], ...] = ()

    @classmethod
    def of(cls, numbers: pd.Series) -> NumberFacts:
        present = numbers.dropna()
        counts = tuple(int(present.between(low, high).sum()) for low, high in _UNITS.values())
        head = present.head(3)
        return cls(len(present), counts, tuple(zip(_labels(head.index), head.tolist(), strict=True)))  # type: ignore[arg-type]

    @classmethod
    def merged(cls, facts: Iterable[NumberFacts]) -> NumberFacts:
        facts = list(facts)
        counts = tuple(sum(f.in_range[i] for f in facts) for i in range(len(_UNITS)))
        first = sorted((p for f in facts for p in f.first), key=_row_order)[:3]
        return cls(sum(f.present for f in facts), counts, tuple(first))  # type: ignore[arg-type]


def number_unit(facts: NumberFacts) -> str:
    """Numbers are ``yyyymmdd`` (8 digits) or Unix time in seconds (10 digits) or milliseconds
    (13 digits): the three never overlap, so the column's range says which it is. Small numbers
    (Excel's serial days) are refused rather than guessed."""
    seconds, milliseconds, excel = (facts.present and n == facts.present for n in facts.in_range)
    if seconds or milliseconds:
        return "s" if seconds else "ms"
    if excel:
        raise DateFormatError("holds numbers like Excel serial days (e.g. 45376), not dates; export the "
                              "column as dates (2024-03-25) or as yyyymmdd numbers (20240325)",
                              pd.Series([v for _, v in facts.first], index=[r for r, _ in facts.first]))
    return "yyyymmdd"


def _ns(parsed: pd.Series) -> pd.Series:
    """Dates as datetime64[ns]; those it cannot hold (before 1677 or after 2262: the ``0001-01-01``
    and ``9999-12-31`` systems write for "unknown" or "never") become missing, and the caller
    reports them (:func:`out_of_range`). Checked only when the conversion fails."""
    try:
        return parsed.astype("datetime64[ns]")
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        inside = (parsed >= pd.Timestamp.min) & (parsed <= pd.Timestamp.max)
        return parsed.where(inside).astype("datetime64[ns]")


YEAR_OUT_OF_RANGE = r"(?:^|\D)(?:0\d{3}|1[0-5]\d\d|16[0-6]\d|167[0-7]|226[3-9]|22[7-9]\d|2[3-9]\d\d|[3-9]\d{3})(?:\D|$)"
"""A four-digit year a date column cannot hold (before 1678 or after 2262)."""


def out_of_range(values: pd.Series) -> pd.Series:
    """Which of the unparsed ``values`` hold such a year (or are such dates already): the
    placeholders to report apart, with their fix."""
    if pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.notna()
    return values.astype("string").str.contains(YEAR_OUT_OF_RANGE, regex=True).fillna(False).astype(bool)


def _labels(index: pd.Index) -> list[Any]:
    return [int(i) if isinstance(i, (int, np.integer)) else i for i in index]


def _naive(parsed: pd.Series) -> pd.Series:
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return _ns(parsed)


_ZONE = r"\d\s*(?:Z|UTC|[+-]\d{2}:?\d{2})$"


def _zoned_to_utc(text: pd.Series, **how: object) -> pd.Series:
    """Parse text that may carry time zones: zoned values are moved to UTC, naive ones kept.

    A column mixing zoned values (``10:00+02:00``) with values without a zone (``09:30``) is
    refused: nobody can tell which zone the latter are in, and guessing UTC moves them by hours.
    Different offsets alone (summer and winter time) are fine: each value says its own.
    """
    try:
        parsed = pd.to_datetime(text, errors="coerce", **how)
        if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
            return _ns(parsed)
    except ValueError:  # several offsets, or zoned mixed with naive values
        pass
    check_zones(ZoneFacts.of(text))
    return _naive(pd.to_datetime(text, errors="coerce", utc=True, **how))


@dataclass(frozen=True)
class ZoneFacts:
    """Whether a text date column mixes times with and without a time zone: its first two values
    of each kind, as (source row, text) pairs. Parts' facts merge into the whole column's (the
    Dask engine refuses a column the whole data mix, although no partition may mix it)."""

    zoned: tuple[tuple[Any, str], ...] = ()
    naive: tuple[tuple[Any, str], ...] = ()

    @classmethod
    def of(cls, text: pd.Series) -> ZoneFacts:
        """The facts of stripped text values (``_text``)."""
        zoned = text.str.contains(_ZONE, regex=True).fillna(False).astype(bool)
        return cls(_pairs(text[zoned], 2), _pairs(text[text.notna() & ~zoned], 2))

    @classmethod
    def merged(cls, facts: Iterable[ZoneFacts]) -> ZoneFacts:
        facts = list(facts)
        return cls(*(tuple(sorted((p for f in facts for p in getattr(f, kind)), key=_row_order)[:2])
                     for kind in ("zoned", "naive")))

    @property
    def mixed(self) -> bool:
        return bool(self.zoned and self.naive)


def zone_facts(values: pd.Series) -> ZoneFacts:
    """The zone facts of a raw date column (empty for columns that are not text)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values) \
            or pd.api.types.is_numeric_dtype(values):
        return ZoneFacts()
    return ZoneFacts.of(_text(values))


def check_zones(facts: ZoneFacts) -> None:
    """Refuse a column mixing zoned values (``10:00+02:00``) with values without a zone."""
    if facts.mixed:
        zoned, naive = _series(facts.zoned), _series(facts.naive)
        raise DateFormatError(
            f"mixes times with a time zone ({_show(zoned)}) and without one "
            f"({_show(naive)}); export every value with its zone (or every value in one "
            "zone without it), so no time is moved by hours", pd.concat([zoned, naive]))


def _families(text: pd.Series) -> pd.Series:
    family = pd.Series("", index=text.index, dtype="string").where(text.notna())
    for name, pattern in FAMILIES.items():
        hit = (family == "") & text.str.fullmatch(pattern).fillna(False).astype(bool)
        family[hit] = name
    return family


@dataclass(frozen=True)
class DayMonthFacts:
    """What a column's day/month/year values say about their order: the first few values of each
    kind, as (source row, text) pairs. The facts of parts of a column merge into the facts of the
    whole (the Dask engine decides the order once from its partitions' facts)."""

    values: tuple[tuple[Any, str], ...] = ()
    """The first three day/month/year values."""
    day_first: tuple[tuple[Any, str], ...] = ()
    """The first two whose first number is above 12 (so the day comes first)."""
    month_first: tuple[tuple[Any, str], ...] = ()
    """The first two whose second number is above 12."""
    others: tuple[tuple[Any, str], ...] = ()
    """The first two values of another format."""

    @classmethod
    def of(cls, day_month: pd.Series, others: pd.Series) -> DayMonthFacts:
        """The facts of the day/month/year values ``day_month`` and the column's ``others``."""
        above_12 = r"(?:1[3-9]|[2-9]\d)\D"  # a one- or two-digit number above 12
        first_big = day_month.str.match(above_12).fillna(False).astype(bool)
        second_big = day_month.str.match(r"\d{1,2}\D" + above_12).fillna(False).astype(bool)
        return cls(_pairs(day_month, 3), _pairs(day_month[first_big], 2), _pairs(day_month[second_big], 2),
                   _pairs(others, 2))

    @classmethod
    def merged(cls, facts: Iterable[DayMonthFacts]) -> DayMonthFacts:
        """The facts of the whole column from the facts of its parts (rows in source order)."""
        facts = list(facts)

        def first(name: str, n: int) -> tuple[tuple[Any, str], ...]:
            return tuple(sorted((p for f in facts for p in getattr(f, name)), key=_row_order)[:n])

        return cls(first("values", 3), first("day_first", 2), first("month_first", 2), first("others", 2))


def _pairs(values: pd.Series, n: int) -> tuple[tuple[Any, str], ...]:
    head = values.head(n)
    return tuple((int(i) if isinstance(i, (int, np.integer)) else i, str(v)) for i, v in head.items())


def _row_order(pair: tuple[Any, str]) -> tuple[int, Any]:
    row = pair[0]
    return (0, row) if isinstance(row, (int, np.integer)) else (1, str(row))


def _series(pairs: Iterable[tuple[Any, str]]) -> pd.Series:
    pairs = list(pairs)
    return pd.Series([v for _, v in pairs], index=[r for r, _ in pairs], dtype="string")


def day_month_facts(values: pd.Series) -> DayMonthFacts:
    """The day/month facts of a raw date column, without classifying every value: only values
    that start like ``dd/mm/`` can be day/month/year ones, and two values of another format are
    enough (the Dask engine's per-partition summary; empty for columns that are not text)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values) \
            or pd.api.types.is_numeric_dtype(values):
        return DayMonthFacts()
    as_text = values if pd.api.types.is_string_dtype(values) else values.astype("string")
    # A cheap look at the start first (ISO dates and numbers fail it), in Arrow's regex dialect
    # (no \s, which needs Python's): a little leading space, then one or two digits and a separator.
    maybe = as_text.str.slice(0, 8).str.contains(r"^[^0-9]{0,4}[0-9]{1,2}[/.-]", na=False).to_numpy(dtype=bool)
    candidates = _text(values[maybe]).dropna()
    day_month = candidates[_families(candidates) == DAY_MONTH]
    rest = np.flatnonzero(~maybe | values.index.isin(candidates.index.difference(day_month.index)))
    start, size, others = 0, 256, pd.Series(dtype="string")
    while start < len(rest) and len(others) < 2:  # usually the first values say it
        chunk = _text(values.iloc[rest[start:start + size]]).dropna()
        others = pd.concat([others, chunk[_families(chunk) != ""]])
        start, size = start + size, size * 4
    return DayMonthFacts.of(day_month, others)


def day_month_order(facts: DayMonthFacts, dayfirst: bool | None) -> bool:
    """Day first (True) or month first (False) for a column's d/m/y values, from ``data.dayfirst``
    or the values (their facts); ``DateFormatError`` when they cannot tell, or contradict."""
    if dayfirst is not None:
        return dayfirst
    values, others = _series(facts.values), _series(facts.others)
    if len(others):
        raise DateFormatError(
            f"mixes date formats in one column: {_show(others)} and day/month/year values like "
            f"{_show(values.head(2))}, which are easy to misread; set {EXAMPLE_FIX}, "
            "or export the column in one format", pd.concat([others, values.head(2)]))
    first_big, second_big = _series(facts.day_first), _series(facts.month_first)
    if len(first_big) and len(second_big):
        raise DateFormatError(
            f"has day-first values ({_show(first_big)}) and month-first values "
            f"({_show(second_big)}) in one column; fix the export, or set {EXAMPLE_FIX} "
            "and the other rows are reported as unparsable", pd.concat([first_big, second_big]))
    if len(first_big) or len(second_big):
        return bool(len(first_big))
    raise DateFormatError(
        f"has dates like {_show(values.head(2))} whose day/month order no value settles (no number above "
        f"12); set {EXAMPLE_FIX}, or data.date_format (e.g. \"%d/%m/%Y\")", values)


def _show(values: pd.Series) -> str:
    return ", ".join(repr(str(v)) for v in values)


def _parse_family(text: pd.Series, family: str, dayfirst: bool) -> pd.Series:
    if family == "ISO":
        return _zoned_to_utc(text, format="ISO8601")
    if family == "yyyymmdd":
        return _ns(pd.to_datetime(text, format="%Y%m%d", errors="coerce"))
    if family == "year/month/day":
        iso = text.str.replace(r"^(\d{4})[/.](\d{1,2})[/.]", r"\1-\2-", regex=True)
        return _zoned_to_utc(iso, format="ISO8601")
    if family == DAY_MONTH:
        norm = text.str.replace(r"^(\d{1,2})[.\-](\d{1,2})[.\-]", r"\1/\2/", regex=True).str.replace("T", " ")
        day = "%d/%m" if dayfirst else "%m/%d"
        out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
        for year in ("%Y", "%y"):
            for time in ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", " %I:%M %p", " %I:%M:%S %p"):
                todo = out.isna()
                if not todo.any():
                    return out
                out[todo] = _ns(pd.to_datetime(norm[todo], format=f"{day}/{year}{time}", errors="coerce"))
        return out
    return _zoned_to_utc(text, format="mixed", dayfirst=dayfirst)
