"""Writing one week's outputs all-or-nothing, byte-identical on reruns.

People and downstream jobs read ``outputs/<as-of>/`` while the next run may be writing, and a
run can die halfway (disk full, killed container). So every file is written into a hidden
sibling folder ``.<as-of>.tmp-<pid>`` and the folder is renamed into place only once all
files are complete. A rerun of the same date swaps the folders (atomically with Linux
``renameat2(RENAME_EXCHANGE)``, otherwise: old folder renamed aside, new one renamed in, old one
deleted), so readers see either last run's complete folder or this run's, never a mix, and a
failure leaves the previous folder untouched and no partial folder behind.

Reruns on the same inputs give byte-identical files: Parquet carries no timestamps (pyarrow
writes none; the pandas schema metadata depends only on the frame), JSON has sorted keys, the
CSV has fixed float formatting and ISO dates, and no writer adds wall-clock times.

CSV choice: UTF-8 *with* BOM (``utf-8-sig``) so Excel on Windows opens names with accents
correctly on double-click; pandas, Python's ``csv`` module (with ``encoding="utf-8-sig"``)
and most tools read it fine. Floats use ``%.10g``; the list already rounds probabilities and
values, so no float noise shows.

This is the only serving module that touches the file system or a database.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

Writer = Callable[[Path], None]
"""Writes one output file at the given path."""

CSV_ENCODING = "utf-8-sig"
CSV_FLOAT_FORMAT = "%.10g"
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ---- writers ----------------------------------------------------------------------
def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet via pyarrow, without the index, deterministic bytes for the same frame."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    pq.write_table(table, path, compression="snappy", write_statistics=True)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 with BOM, ``\\n`` line ends, ISO dates, ``%.10g`` floats, empty string for missing."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col].dtype):
            t = out[col]
            dated_only = bool((t.dropna() == t.dropna().dt.normalize()).all())
            out[col] = t.dt.strftime("%Y-%m-%d" if dated_only else "%Y-%m-%dT%H:%M:%S")
    out.to_csv(path, index=False, encoding=CSV_ENCODING, float_format=CSV_FLOAT_FORMAT, lineterminator="\n", date_format="%Y-%m-%d")


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    return value


def write_json(data: Mapping[str, Any], path: Path) -> None:
    """Sorted keys, 2-space indent, NaN/inf as null (strict JSON), trailing newline."""
    text = json.dumps(_json_safe(data), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_text(text: str, path: Path) -> None:
    path.write_bytes(text.encode("utf-8"))


def standard_writers(
    scores: pd.DataFrame, priority_list: pd.DataFrame, summary: Mapping[str, Any], report_html: str
) -> dict[str, Writer]:
    """The five files of a weekly output folder (DESIGN.md, "Outputs")."""
    return {
        "scores.parquet": lambda p: write_parquet(scores, p),
        "priority_list.csv": lambda p: write_csv(priority_list, p),
        "priority_list.parquet": lambda p: write_parquet(priority_list, p),
        "summary.json": lambda p: write_json(summary, p),
        "report.html": lambda p: write_text(report_html, p),
    }


# ---- atomic folder publication --------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2). False when unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(root: Path, day: str) -> None:
    """Delete leftovers of crashed runs for this date (their process is gone)."""
    for path in root.glob(f".{day}.*-*"):
        m = re.search(r"\.(?:tmp|old)-(\d+)$", path.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_outputs(
    output_root: Path,
    as_of: date | datetime | pd.Timestamp,
    files: Mapping[str, Writer],
    *,
    use_exchange: bool = True,
) -> Path:
    """Write ``files`` (name -> writer) into ``output_root/<as-of>/`` all-or-nothing.

    Returns the published folder. On any writer error the temporary folder is removed, the
    previous folder of that date (if any) is left as it was, and the error is re-raised.
    ``use_exchange=False`` forces the portable rename-aside path (used by the tests).
    """
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    day = pd.Timestamp(as_of).date().isoformat()
    final = root / day
    tmp = root / f".{day}.tmp-{os.getpid()}"
    old = root / f".{day}.old-{os.getpid()}"
    _remove_stale(root, day)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name in sorted(files):
            if Path(name).name != name or name.startswith("."):
                raise ValueError(f"output file name must be a plain file name, got {name!r}")
            path = tmp / name
            files[name](path)
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if not final.exists():
            os.rename(tmp, final)
        elif use_exchange and _exchange(tmp, final):
            shutil.rmtree(tmp)  # tmp now holds the previous run's folder
        else:
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except BaseException:
                os.rename(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def published_folders(output_root: Path) -> list[Path]:
    """Dated output folders, oldest first (hidden temporary folders are not dated folders)."""
    root = Path(output_root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _DATED.match(p.name)), key=lambda p: p.name)


def read_previous_list(output_root: Path, as_of: date | datetime | pd.Timestamp) -> pd.DataFrame | None:
    """The priority list of the latest dated folder strictly before ``as_of`` (None if none).

    Hidden temporary folders and folders without a list are skipped.
    """
    day = pd.Timestamp(as_of).date().isoformat()
    for folder in reversed([p for p in published_folders(output_root) if p.name < day]):
        if (folder / "priority_list.parquet").exists():
            return pd.read_parquet(folder / "priority_list.parquet")
        if (folder / "priority_list.csv").exists():
            return pd.read_csv(folder / "priority_list.csv", encoding=CSV_ENCODING)
    return None


def write_list_to_database(
    priority_list: pd.DataFrame, url: str, table: str, as_of: date | datetime | pd.Timestamp
) -> int:
    """Replace the rows of ``as_of`` in ``table`` with this list, in one transaction.

    Creates the table on first use (columns of the list plus ``as_of`` as a date). A rerun of
    the same week therefore replaces, never duplicates, and a failure leaves the old rows.
    Returns the number of rows inserted.
    """
    import sqlalchemy as sa

    day = pd.Timestamp(as_of).date()
    frame = priority_list.copy()
    frame.insert(0, "as_of", day)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if sa.inspect(conn).has_table(table):
                tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
                conn.execute(sa.delete(tbl).where(tbl.c.as_of == day))
            frame.to_sql(table, conn, if_exists="append", index=False, dtype={"as_of": sa.Date()})
    finally:
        engine.dispose()
    return len(frame)
