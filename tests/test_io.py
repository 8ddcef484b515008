"""features/io.py: the one atomic writer, JSON writer, SQLite-URL helper and missing-value test."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnflow.features.io import (
    atomic_write,
    ensure_sqlite_folder,
    is_missing,
    json_text,
    resolve_sqlite_url,
    sqlite_path,
    write_json,
)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.txt"
    assert atomic_write(target, lambda p: p.write_text("one")) == target
    assert target.read_text() == "one"

    def half(path: Path) -> None:
        path.write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.txt"]  # no temporary left

    seen: list[Path] = []
    atomic_write(target, lambda p: (seen.append(p), p.write_text("two")))
    assert seen == [target.with_name(f".data.txt.tmp-{os.getpid()}")]
    assert target.read_text() == "two"


def test_json_is_strict_sorted_and_deterministic(tmp_path: Path) -> None:
    data = {
        "b": float("nan"), "a": [np.float64(0.5), np.int64(3), float("inf"), pd.NA, pd.NaT],
        "when": pd.Timestamp("2024-03-04"), "day": date(2024, 3, 4), "path": Path("x/y"),
        "flag": np.bool_(True), "name": "Zoë", "arr": np.array([1, 2]),
    }
    text = json_text(data)
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert list(back) == sorted(back)
    assert back == {
        "a": [0.5, 3, None, None, None], "arr": [1, 2], "b": None, "day": "2024-03-04",
        "flag": True, "name": "Zoë", "path": "x/y", "when": "2024-03-04T00:00:00",
    }
    write_json(tmp_path / "d.json", data)
    assert (tmp_path / "d.json").read_bytes() == text.encode("utf-8")


def test_sqlite_urls(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")
    assert sqlite_path("sqlite:////abs/x.db?timeout=3") == Path("/abs/x.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql://u@h/db") is None
    assert resolve_sqlite_url("sqlite:///rel/x.db?timeout=3", tmp_path) == f"sqlite:///{tmp_path}/rel/x.db?timeout=3"
    assert resolve_sqlite_url("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_sqlite_url("sqlite:///:memory:", tmp_path) == "sqlite:///:memory:"
    assert resolve_sqlite_url("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"
    ensure_sqlite_folder(f"sqlite:///{tmp_path}/a/b/x.db")
    assert (tmp_path / "a" / "b").is_dir() and not (tmp_path / "a" / "b" / "x.db").exists()


@pytest.mark.parametrize("value", [None, pd.NA, pd.NaT, float("nan"), np.float32("nan"), np.datetime64("NaT")])
def test_missing_values(value: object) -> None:
    assert is_missing(value)


@pytest.mark.parametrize("value", [0, 0.0, "", "nan", False, pd.Timestamp("2024-01-01"), np.float64(1.5), [None]])
def test_present_values(value: object) -> None:
    assert not is_missing(value)
