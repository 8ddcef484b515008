"""The edges where churnflow touches files and databases: one way to do each small thing.

The lowest layer (standard library, numpy and pandas only), so every package may use it:

* :func:`atomic_write` writes a file to a temporary name in the same folder, flushes it to disk
  and renames it into place, so a reader (or a crash) never sees half a file;
* :func:`json_text` / :func:`write_json` give strict, sorted, deterministic JSON (NaN and
  infinity become ``null``; numpy scalars, dates and paths become plain JSON values), so the
  same data always give the same bytes and every JSON reader can parse them;
* :func:`sqlite_path`, :func:`resolve_sqlite_url` and :func:`ensure_sqlite_folder` read, anchor
  and prepare the file of a ``sqlite:///`` URL (SQLite, MLflow and Optuna create no folders);
* :func:`is_missing` says whether one scalar is missing (None, NaN, ``pd.NA``, ``NaT``);
* :func:`pid_alive` says whether a process of this machine still runs (leftovers of a crashed
  run are recognised by the process id in their name).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SQLITE_PREFIX = "sqlite:///"


# ---- files --------------------------------------------------------------------------------
def fsync_file(path: Path) -> None:
    """Flush a written file's bytes to disk (before a rename makes it visible)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, rename it to ``path``.

    The temporary name is hidden (``.<name>.tmp-<pid>``) and in the same folder, so the rename is
    atomic; on any error it is removed and ``path`` keeps its previous content. The folder is
    created when missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (one we may not signal does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- JSON ---------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """``value`` with every part a plain JSON value (see module docstring)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if is_missing(value):
        return None
    if isinstance(value, datetime | date):  # pd.Timestamp is a datetime
        return value.isoformat()
    return str(value)


def json_text(data: Any) -> str:
    """Strict JSON: sorted keys, 2-space indent, UTF-8 text as is, a trailing newline."""
    return json.dumps(json_safe(data), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: Path, data: Any) -> Path:
    """Write :func:`json_text` of ``data`` to ``path`` (UTF-8); returns ``path``."""
    path = Path(path)
    path.write_text(json_text(data), encoding="utf-8")
    return path


# ---- SQLite URLs --------------------------------------------------------------------------
def _sqlite_parts(url: str) -> tuple[str, str] | None:
    """(file path, ``?query`` or "") of a file-backed ``sqlite:///`` URL; None otherwise."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    path, sep, query = url.removeprefix(SQLITE_PREFIX).partition("?")
    if not path or path == ":memory:":
        return None
    return path, sep + query


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URL; None for other URLs and in-memory ones.

    ``sqlite:///rel/x.db`` is relative to the working folder, ``sqlite:////abs/x.db`` absolute
    (SQLAlchemy's convention).
    """
    parts = _sqlite_parts(url)
    return None if parts is None else Path(parts[0])


def resolve_sqlite_url(url: str, base: Path) -> str:
    """A ``sqlite:///`` URL with its file made absolute (``~`` expanded, relative to ``base``).

    Other URLs come back unchanged, so settings can name a relative database file and still mean
    the folder of the settings file wherever the command runs.
    """
    parts = _sqlite_parts(url)
    if parts is None:
        return url
    path = Path(parts[0]).expanduser()
    return f"{SQLITE_PREFIX}{path if path.is_absolute() else Path(base) / path}{parts[1]}"


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite URL's database file (nothing for other URLs)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


# ---- missing values -----------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    """True for None, ``pd.NA``, ``NaT`` and float NaN (numpy's too); False for anything else."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return False
