"""Reading raw tables from files or databases, nothing more.

A source is a CSV or Parquet path, or a SQLAlchemy URL plus a table name or SQL query. What
comes back is the user's table with the user's column names; mapping and validation happen in
``features.contracts``.
"""

from __future__ import annotations

from pathlib import Path

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
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if suffix.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if suffix.endswith((".csv", ".csv.gz", ".txt")):
            return _read_text(path, ",", settings)
        if suffix.endswith((".tsv", ".tsv.gz")):
            return _read_text(path, "\t", settings)
    except UnicodeError as exc:
        raise SourceError(
            f"{what}: {path.name} is not {settings.data.encoding} text ({exc.reason} at byte {exc.start}). "
            f"Set data.encoding to the file's encoding, e.g. data.encoding = \"latin-1\" (or \"cp1252\" "
            "for Excel exports), or save the file as UTF-8.") from None
    except (ValueError, OSError) as exc:
        raise SourceError(f"{what}: cannot read {path}: {exc}") from exc
    raise SourceError(f"{what}: unsupported file type {path.suffix!r} for {path}; use .csv, .tsv or .parquet")


def _read_text(path: Path, sep: str, settings: Settings) -> pd.DataFrame:
    """A CSV/TSV with the id column as text, a UTF-8 byte-order mark (Excel) ignored, header names
    trimmed, and a semicolon-separated export (European Excel) read as such when its header says so."""
    encoding = settings.data.encoding
    if encoding.lower().replace("-", "").replace("_", "") == "utf8":
        encoding = "utf-8-sig"
    header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
    if len(header) == 1 and ";" in str(header[0]):
        sep = ";"
        header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
    ids = {c: str for c in header if str(c).strip() == settings.data.columns.customer_id}
    frame = pd.read_csv(path, sep=sep, dtype=ids, encoding=encoding, low_memory=False)
    frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    return frame


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
