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

import pandas as pd

_TIME = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
FAMILIES = {
    "ISO": rf"\d{{4}}-\d{{1,2}}-\d{{1,2}}{_TIME}(?:Z|[+-]\d{{2}}:?\d{{2}})?",
    "yyyymmdd": r"\d{8}",
    "day/month/year": rf"\d{{1,2}}([/.\-])\d{{1,2}}\1(?:\d{{4}}|\d{{2}}){_TIME}",
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


def parse_dates(values: pd.Series, fmt: str = "", dayfirst: bool | None = None) -> pd.Series:
    """Parse one date column to naive datetime64[ns] (UTC for values with a time zone).

    ``fmt`` (a strftime format) is used as given. Otherwise the format is detected for the whole
    column (see the module docstring); ``DateFormatError`` when it is ambiguous. Values of no
    known format become NaT; the caller reports them.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(values):
        return _parse_numbers(values)
    text = values.astype("string").str.strip().replace("", pd.NA)
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
        dayfirst = _day_month_order(text[family == DAY_MONTH], dayfirst, mixed=len(found) > 1,
                                    others=text[(family != DAY_MONTH) & family.notna() & (family != "")])
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    for name in found:
        mask = family == name
        out[mask] = _parse_family(text[mask], name, bool(dayfirst))
    return out


def _parse_numbers(values: pd.Series) -> pd.Series:
    """Numbers are ``yyyymmdd`` (8 digits) or Unix time in seconds (10 digits) or milliseconds
    (13 digits): the three never overlap, so the column's range says which it is. Small numbers
    (Excel's serial days) are refused rather than guessed."""
    numbers = pd.to_numeric(values, errors="coerce")
    present = numbers.dropna()
    for low, high, unit in ((1e9, 1e11, "s"), (1e12, 1e14, "ms")):
        if len(present) and present.between(low, high).all():
            return pd.to_datetime(numbers, unit=unit, errors="coerce").astype("datetime64[ns]")
    if len(present) and present.between(1, 100_000).all():
        raise DateFormatError("holds numbers like Excel serial days (e.g. 45376), not dates; export the "
                              "column as dates (2024-03-25) or as yyyymmdd numbers (20240325)", present.head(3))
    as_text = numbers.round().astype("Int64").astype("string").where(numbers == numbers.round())
    return pd.to_datetime(as_text, format="%Y%m%d", errors="coerce").astype("datetime64[ns]")


def _naive(parsed: pd.Series) -> pd.Series:
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


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
            return parsed.astype("datetime64[ns]")
    except ValueError:  # several offsets, or zoned mixed with naive values
        pass
    zoned = text.str.contains(_ZONE, regex=True).fillna(False).astype(bool)
    naive = text.notna() & ~zoned
    if zoned.any() and naive.any():
        examples = pd.concat([text[zoned].head(2), text[naive].head(2)])
        raise DateFormatError(
            f"mixes times with a time zone ({_show(text[zoned].head(2))}) and without one "
            f"({_show(text[naive].head(2))}); export every value with its zone (or every value in one "
            "zone without it), so no time is moved by hours", examples)
    return _naive(pd.to_datetime(text, errors="coerce", utc=True, **how))


def _families(text: pd.Series) -> pd.Series:
    family = pd.Series("", index=text.index, dtype="string").where(text.notna())
    for name, pattern in FAMILIES.items():
        hit = (family == "") & text.str.fullmatch(pattern).fillna(False).astype(bool)
        family[hit] = name
    return family


def _day_month_order(text: pd.Series, dayfirst: bool | None, mixed: bool, others: pd.Series) -> bool:
    """Day first (True) or month first (False) for the d/m/y values, from the data or the setting."""
    if dayfirst is not None:
        return dayfirst
    parts = text.str.extract(r"^(\d{1,2})\D(\d{1,2})\D").astype("float64")
    first_big, second_big = parts[0] > 12, parts[1] > 12
    if mixed:
        examples = pd.concat([others.head(2), text.head(2)])
        raise DateFormatError(
            f"mixes date formats in one column: {_show(others.head(2))} and day/month/year values like "
            f"{_show(text.head(2))}, which are easy to misread; set {EXAMPLE_FIX}, "
            "or export the column in one format", examples)
    if first_big.any() and second_big.any():
        examples = pd.concat([text[first_big].head(2), text[second_big].head(2)])
        raise DateFormatError(
            f"has day-first values ({_show(text[first_big].head(2))}) and month-first values "
            f"({_show(text[second_big].head(2))}) in one column; fix the export, or set {EXAMPLE_FIX} "
            "and the other rows are reported as unparsable", examples)
    if first_big.any() or second_big.any():
        return bool(first_big.any())
    raise DateFormatError(
        f"has dates like {_show(text.head(2))} whose day/month order no value settles (no number above "
        f"12); set {EXAMPLE_FIX}, or data.date_format (e.g. \"%d/%m/%Y\")", text.head(3))


def _show(values: pd.Series) -> str:
    return ", ".join(repr(str(v)) for v in values)


def _parse_family(text: pd.Series, family: str, dayfirst: bool) -> pd.Series:
    if family == "ISO":
        return _zoned_to_utc(text, format="ISO8601")
    if family == "yyyymmdd":
        return pd.to_datetime(text, format="%Y%m%d", errors="coerce").astype("datetime64[ns]")
    if family == "year/month/day":
        iso = text.str.replace(r"^(\d{4})[/.](\d{1,2})[/.]", r"\1-\2-", regex=True)
        return _zoned_to_utc(iso, format="ISO8601")
    if family == DAY_MONTH:
        norm = text.str.replace(r"^(\d{1,2})[.\-](\d{1,2})[.\-]", r"\1/\2/", regex=True).str.replace("T", " ")
        day = "%d/%m" if dayfirst else "%m/%d"
        out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
        for year in ("%Y", "%y"):
            for time in ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f"):
                todo = out.isna()
                if not todo.any():
                    return out
                out[todo] = pd.to_datetime(norm[todo], format=f"{day}/{year}{time}", errors="coerce")
        return out
    return _zoned_to_utc(text, format="mixed", dayfirst=dayfirst)
