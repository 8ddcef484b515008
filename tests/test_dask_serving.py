"""The Dask engine's weekly outputs without gathering every score row on the client.

``scores.parquet`` is written by the workers in pieces and merged in customer order by the client
a slice at a time; the file must still be the local engine's byte for byte. Small row groups and
merge slices (monkeypatched) make a small project exercise several of each. One local cluster of
two single-thread workers (``dask_session`` in conftest); the workers are threads of this process,
so the patched sizes apply to them too.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import churnflow.serving.partitioned as partitioned
import churnflow.serving.publish as publish
from churnflow.features.contracts import load_tables
from churnflow.features.settings import Settings, load_settings
from churnflow.serving.publish import ScoresFile, merged_by_key, write_parquet, write_parquet_stream
from tests.conftest import write_project

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]


def scores_like(n: int, ids: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "customer_id": ids,
        "as_of": pd.Timestamp("2026-06-01"),
        "churn_probability": rng.random(n),
        "risk_tier": rng.choice(["low", "medium", "high"], n).astype(object),
        "segment": pd.Series(rng.choice(["loyal", "new", "at risk"], n), dtype="str"),
        "status": rng.choice(["unlisted", "new", "holdout"], n).astype(object),
    })


@pytest.mark.parametrize("ids", ["int", "text"])
def test_pieces_merged_in_slices_give_the_whole_table_s_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              ids: str) -> None:
    monkeypatch.setattr(publish, "ROW_GROUP_ROWS", 100)  # several row groups
    monkeypatch.setattr(publish, "MERGE_ROWS", 40)  # several slices per piece
    n = 1000
    keys = np.random.default_rng(1).permutation(np.arange(5 * n))[:n]
    frame = scores_like(n, keys if ids == "int" else np.array([f"C-{k:05d}" for k in keys], dtype=object))
    whole = frame.sort_values("customer_id", kind="stable").reset_index(drop=True)
    write_parquet(whole, tmp_path / "whole.parquet")

    pieces = []
    for i, part in enumerate(np.array_split(np.random.default_rng(2).permutation(n), 7)):  # unequal, interleaved
        pieces.append(publish.write_piece(frame.iloc[np.sort(part)].sort_values("customer_id"), tmp_path, i))
    schema = pq.read_schema(pieces[0])
    slices = list(merged_by_key(pieces, "customer_id", schema))
    assert len(slices) > 7 and max(s.num_rows for s in slices) <= 40
    assert write_parquet_stream(iter(slices), tmp_path / "merged.parquet", schema) == n
    assert pq.ParquetFile(tmp_path / "merged.parquet").num_row_groups == 10
    assert (tmp_path / "merged.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_stale_scores_folders_are_removed_only_when_their_process_is_gone_here(tmp_path: Path) -> None:
    here, dead = socket.gethostname(), 2**22 + 12345  # above Linux's pid_max default: no such process
    ours = publish.scores_workspace(tmp_path, "2026-06-01")
    stale = tmp_path / f".2026-06-01.scores-{here}-{dead}"
    elsewhere = tmp_path / f".2026-06-01.scores-another-host-{dead}"  # a cluster worker's: its pid means nothing here
    for folder in (stale, elsewhere):
        folder.mkdir()
    assert ours.name == f".2026-06-01.scores-{here}-{os.getpid()}"
    publish.scores_workspace(tmp_path, "2026-06-01")
    assert not stale.exists() and elsewhere.exists() and ours.exists()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Any]:
    from tests.test_dask_parity import train_small_model

    settings = load_settings(write_project(tmp_path_factory.mktemp("project"), n_customers=1200, seed=5))
    return settings, train_small_model(settings)


def test_scores_file_is_the_local_engine_s_and_never_gathered_whole(
        dask_session: Any, project: tuple[Settings, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from churnflow.features.partitioned import read_partitioned
    from churnflow.serving.weekly import score_week

    settings, bundle = project
    monkeypatch.setattr(publish, "ROW_GROUP_ROWS", 128)
    monkeypatch.setattr(publish, "MERGE_ROWS", 64)
    tables = load_tables(settings, require_label=False)
    previous = tables.customers[["customer_id"]].iloc[::50]
    local = score_week(tables, None, bundle, "2", settings, previous_list=previous)

    seen: dict[str, Any] = {"slices": []}
    week_outputs, merge = partitioned.week_outputs, partitioned.merged_by_key

    def spy_outputs(result: Any, *args: Any, **kwargs: Any) -> Any:
        seen["client_rows"] = len(result.scored)
        return week_outputs(result, *args, **kwargs)

    def spy_merge(*args: Any) -> Any:
        for piece in merge(*args):
            seen["slices"].append(piece.num_rows)
            yield piece

    monkeypatch.setattr(partitioned, "week_outputs", spy_outputs)
    monkeypatch.setattr(partitioned, "merged_by_key", spy_merge)
    got = partitioned.score_week_partitioned(read_partitioned(settings, 8), None, bundle, "2", settings,
                                             previous_list=previous)
    try:
        n = len(local.scores)
        assert isinstance(got.scores, ScoresFile) and len(got.scores) == n > 1000
        # the client saw the candidates and last week's listed customers, and the rest a slice at a time
        assert seen["client_rows"] < n / 2
        assert sum(seen["slices"]) == n and max(seen["slices"]) <= 64 and len(seen["slices"]) > 8
        write_parquet(local.scores, settings.path("local.parquet"))
        assert pq.ParquetFile(got.scores.path).num_row_groups == -(-n // 128)
        assert got.scores.path.read_bytes() == Path(settings.path("local.parquet")).read_bytes()
        assert got.summary == local.summary | {"input_fingerprint": got.summary["input_fingerprint"]}
        assert got.summary["n_scored"] == n and sum(got.summary["tiers_scored"].values()) == n
        pd.testing.assert_frame_equal(got.priority_list, local.priority_list, check_exact=True)
        pd.testing.assert_frame_equal(got.dropped, local.dropped, check_exact=True)
        assert len(local.dropped) and local.dropped["churn_probability"].notna().any()
    finally:
        got.discard()
    assert not got.scores.path.parent.exists()


def test_a_failure_while_writing_the_scores_leaves_no_working_folder(
        dask_session: Any, project: tuple[Settings, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from churnflow.features.partitioned import read_partitioned

    settings, bundle = project
    settings = settings.model_copy(deep=True)
    settings.serving.output_dir = str(tmp_path / "outputs")

    def full_disk(tables: Any, path: Path, schema: pa.Schema) -> int:
        path.write_bytes(b"half a file")
        raise OSError("disk full (injected)")

    monkeypatch.setattr(partitioned, "write_parquet_stream", full_disk)
    with pytest.raises(OSError, match="disk full"):
        partitioned.score_week_partitioned(read_partitioned(settings, 4), None, bundle, "2", settings)
    assert list((tmp_path / "outputs").iterdir()) == []
