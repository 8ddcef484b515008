"""Reading raw tables from files or databases, nothing more.

A source is a CSV or Parquet path, or a SQLAlchemy URL plus a table name or SQL query. What
comes back is the user's table with the user's column names; mapping and validation happen in
``features.contracts``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from churnflow.features.errors import ChurnflowError
from churnflow.features.settings import Settings


class SourceError(ChurnflowError, OSError):
    """A configured source cannot be read (missing file, unknown format, database error)."""


def is_database_url(source: str) -> bool:
    return "://" in source


def read_source(source: str, table: str, settings: Settings, what: str) -> pd.DataFrame:
    """Read one configured source; ``what`` names the settings key for error messages.

    The customer id column of a CSV is read as text, so ``0007`` stays ``0007``: ids are
    identifiers, not numbers (see ``features.contracts`` for how ids are compared).
    """
    if is_database_url(source):
        return _read_sql(settings.url_or_path(source), table, what)
    path = settings.path(source)
    if not path.exists():
        raise SourceError(
            f"{what}: file {path} does not exist. Check data.{what} in your settings"
            + (" or run `churnflow demo-data` to create the demo data." if "demo" in str(path) else ".")
        )
    if path.is_dir():
        return _read_folder(path, what)
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if suffix.endswith((".csv", ".csv.gz", ".txt")):
            return _read_text(path, ",", settings)
        if suffix.endswith((".tsv", ".tsv.gz")):
            return _read_text(path, "\t", settings)
    except SourceError as exc:
        raise SourceError(f"{what}: {exc} (data.{what})") from None
    except UnicodeError as exc:
        where = f" ({exc.reason} at byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""
        raise SourceError(
            f"{what}: {path.name} is not {settings.data.encoding} text{where}. Set data.encoding to the "
            "file's encoding, e.g. data.encoding = \"latin-1\" (or \"cp1252\" for Excel exports), or save "
            "the file as UTF-8.") from None
    except (ValueError, OSError) as exc:
        raise SourceError(f"{what}: {unreadable(path, exc)} (data.{what})") from exc
    if suffix.endswith((".xlsx", ".xlsm", ".xls", ".ods", ".numbers")):
        raise SourceError(f"{what}: {path.name} is a spreadsheet workbook, not a data file; save the sheet "
                          f"as CSV (UTF-8) or Parquet and point data.{what} at that file")
    raise SourceError(f"{what}: unsupported file type {path.suffix!r} for {path}; use .csv, .tsv or .parquet "
                      f"(check data.{what})")


def values_refused(exc: Exception) -> tuple[int, int, int] | None:
    """(columns the header names, the parser's line, values on it) when the CSV parser refused a
    line for holding more values than the header has names, else None."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def unreadable(path: Path, exc: Exception) -> str:
    """Why a file cannot be read, in the file's terms: its lines, not the CSV parser's jargon
    (line numbers as the parser counted them from the file's start: the local reader's, and the
    Dask reader's first block, read whole when the source is opened)."""
    text = str(exc)
    if isinstance(exc, pd.errors.EmptyDataError):
        return f"{path.name} is empty (no header line and no rows); export the data again or point at the right file"
    fields = values_refused(exc)
    if fields:
        expected, line, saw = fields
        return (f"{path.name}: line {line} has {saw} values but the header line names {expected} columns; a value "
                "holding the separator must be quoted (\"1,200\", \"Lee, Ann\"), or the line has a separator too many")
    quote = re.search(r"EOF inside string starting at row (\d+)", text)
    if quote:
        return (f"{path.name}: the quote (\") opened on line {int(quote.group(1)) + 1} is never closed; fix the stray "
                "quote on that line (a quote inside a value is written twice: \"\")")
    return f"cannot read {path}: {exc}"


def _read_folder(path: Path, what: str) -> pd.DataFrame:
    """A folder is a Parquet dataset (a partitioned export), or a mistake the message names."""
    if any(path.rglob("*.parquet")):
        return pd.read_parquet(path)
    raise SourceError(f"{what}: {path} is a folder, not a file; point data.{what} at the file itself "
                      "(a folder works only when it holds Parquet files)")


def _text_encoding(path: Path, encoding: str) -> str:
    """The encoding to read with: a byte-order mark settles it (UTF-16 from Excel's "Unicode
    text", UTF-8 with BOM); otherwise the configured one, with UTF-8 ignoring a BOM."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") and not path.name.lower().endswith(".gz"):
        raise SourceError(f"{path.name} is a spreadsheet workbook (Excel) with a text file's name; open it and "
                          "save the sheet as CSV (UTF-8), or export it as Parquet")
    if head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff"):
        return "utf-16"
    if encoding.lower().replace("-", "").replace("_", "") == "utf8" or head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    return encoding


def _read_text(path: Path, sep: str, settings: Settings) -> pd.DataFrame:
    """A CSV/TSV read with :func:`text_options`, header names trimmed, and rows with no value at
    all skipped (``skip_blank_rows``)."""
    frame = pd.read_csv(path, **text_options(path, sep, settings), low_memory=False)
    return skip_blank_rows(frame.rename(columns=trimmed))


def text_options(path: Path, sep: str, settings: Settings) -> dict[str, Any]:
    """``read_csv`` options for a CSV/TSV (pandas' or Dask's reader): the id column as text, a
    byte-order mark (Excel) honoured, a file separated by ``;`` (European Excel), tabs or ``|``
    read as such when its header line says so, and numbers with ``data.decimal``'s mark."""
    encoding = _text_encoding(path, settings.data.encoding)
    header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
    if len(header) == 1:  # another separator than the name says: the header line tells which
        found = [c for c in (";", "\t", "|", ",") if c != sep and c in str(header[0])]
        if found:
            sep = found[0]
            header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
    _no_repeated_names(path, sep, encoding)
    ids = {c: str for c in header if str(c).strip() == settings.data.columns.customer_id}
    return {"sep": sep, "dtype": ids, "encoding": encoding, "decimal": settings.data.decimal}


def trimmed(column: Any) -> Any:
    """A header name without surrounding blanks (exports often pad them)."""
    return column.strip() if isinstance(column, str) else column


def skip_blank_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of nothing but separators (",,,", Excel's trailing lines) hold no data: skipped like
    blank lines, keeping the index, so every message still cites the right file line."""
    return frame.dropna(how="all")


def _no_repeated_names(path: Path, sep: str, encoding: str) -> None:
    """Two columns of one name: pandas would rename the second (``amount.1``) and churnflow would
    silently use the first. Refused with both positions."""
    names = [str(n).strip() for n in pd.read_csv(path, sep=sep, header=None, nrows=1, encoding=encoding,
                                                 dtype=str).iloc[0].tolist()]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen and name not in ("", "nan"):
            raise SourceError(f"{path.name} has two columns named {name!r} (columns {seen[name]} and {position} "
                              "of the header line); rename or delete one")
        seen[name] = position


def _read_sql(url: str, table: str, what: str) -> pd.DataFrame:
    import sqlalchemy as sa

    if not table.strip():
        raise SourceError(f"{what}: a database URL needs data.{what}_table (a table name or a SELECT query)")
    engine = sa.create_engine(url)
    database = engine.url.database
    local = engine.url.get_backend_name() == "sqlite" and database and database != ":memory:"
    if local and not Path(database).exists():  # SQLite would create an empty database: "no such table"
        engine.dispose()
        raise SourceError(f"{what}: the SQLite database file {database} does not exist. "
                          f"Check data.{what} (sqlite:///relative/path.db or sqlite:////absolute/path.db).")
    query = table if table.lstrip().lower().startswith(("select", "with")) else f'SELECT * FROM "{table}"'
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(sa.text(query), conn)
    except Exception as exc:  # database drivers raise many types; name the source and re-raise
        raise SourceError(f"{what}: cannot read {table!r} from {engine.url.render_as_string()}: {exc}") from exc
    finally:
        engine.dispose()


def source_kind(source: str) -> str:
    """``csv`` (errors give file line numbers), ``table`` (Parquet, SQL: "row N") or ``none``."""
    if not source:
        return "none"
    if is_database_url(source):
        return "table"
    return "csv" if Path(source).suffix.lower() in {".csv", ".tsv", ".txt", ".gz"} else "table"


def source_label(source: str, table: str) -> str:
    """How an error message names a source: the file name, or the table in the database."""
    if is_database_url(source):
        return f"{table} ({source.split('://', 1)[0]} database)"
    return Path(source).name
