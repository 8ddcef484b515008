"""The Dask engine's weekly outputs without gathering every score row on the client.

``scores.parquet`` is written by the workers in pieces and merged in customer order by the client
a slice at a time; the file must still be the local engine's byte for byte. Small row groups and
merge slices (monkeypatched) make a small project exercise several of each. One local cluster of
two single-thread workers (``dask_session`` in conftest); the workers are threads of this process,
so the patched sizes apply to them too.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("dask.distributed")

from dask.utils import key_split
from distributed import get_task_stream

import churnflow.serving.partitioned as partitioned
import churnflow.serving.publish as publish
from churnflow.features.contracts import load_tables
from churnflow.features.partitioned import (
    PartitionStore,
    Validated,
    read_partitioned,
    validate_partitions,
)
from churnflow.features.settings import Settings, load_settings
from churnflow.serving.outcome_store import update_outcomes
from churnflow.serving.outcomes import realised
from churnflow.serving.publish import (
    ScoresFile,
    merged_by_key,
    publish_week,
    standard_writers,
    write_parquet,
    write_parquet_stream,
)
from churnflow.serving.weekly import score_week
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
        pieces.append(publish.write_piece(frame.iloc[np.sort(part)].sort_values("customer_id"), tmp_path, i, 7))
    schema = pq.read_schema(pieces[0])
    slices = list(merged_by_key(pieces, "customer_id", schema))
    # every piece reads on each round: rounds follow rows / MERGE_ROWS (not the pieces' batches,
    # 200 here), and at most twice MERGE_ROWS rows are held
    assert 7 < len(slices) <= 3 * n // 40 and max(s.num_rows for s in slices) <= 2 * 40
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
        assert sum(seen["slices"]) == n and max(seen["slices"]) <= 2 * 64 and len(seen["slices"]) > 8
        write_parquet(local.scores, settings.path("local.parquet"))
        assert pq.ParquetFile(got.scores.path).num_row_groups == -(-n // 128)
        assert got.scores.path.read_bytes() == Path(settings.path("local.parquet")).read_bytes()
        assert [p.name for p in got.scores.path.parent.iterdir()] == ["scores.parquet"]  # pieces merged, gone
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


def test_passes_read_each_partition_from_the_store_not_from_worker_memory(
        dask_session: Any, project: tuple[Settings, Any], tmp_path: Path) -> None:
    """Memory flat however large the data: between passes nothing of the data stays in the
    cluster; each pass reads its partition back from the run's store (gone with the store)."""
    settings, _ = project
    with PartitionStore.beside(tmp_path / "outputs") as store:
        validated, summaries = validate_partitions(read_partitioned(settings, 4), settings, require_label=False,
                                                   store=store, for_schema=False)
        assert sum(s.n_customers for s in summaries) == 1200
        assert all(s.attributes is None for s in summaries)  # scoring with a model's schema: none travel
        held = dask_session.run_on_scheduler(lambda dask_scheduler: {
            key_split(k) for k, ts in dask_scheduler.tasks.items() if ts.state == "memory"})
        assert held <= {"summary", "whole_decisions", "raw_index"}  # small results being released, no rows
        assert sorted(p.name for p in store.folder.iterdir()) == [f"validated-{i:05d}.pkl" for i in range(4)]
        first = dask_session.compute(validated[0]).result()
        assert isinstance(first, Validated) and first.tables is not None and len(first.tables.customers)
        (store.folder / "validated-00001.pkl").unlink()
        with pytest.raises(FileNotFoundError):
            dask_session.compute(validated[1]).result()
    assert not store.folder.exists()


def test_only_the_client_s_store_removes_its_folder_and_leftovers_of_dead_runs_go(tmp_path: Path) -> None:
    here = socket.gethostname()
    dead = tmp_path / f".partitions-{here}-{2**22 + 12345}-0"  # above Linux's default pid_max: no such process
    elsewhere = tmp_path / f".partitions-another-host-{2**22 + 12345}-0"
    for folder in (dead, elsewhere):
        folder.mkdir()
    store = PartitionStore.beside(tmp_path)
    assert not dead.exists() and elsewhere.exists() and store.folder.exists()
    store.put("scored", 3, {"rows": 7})
    on_worker = pickle.loads(pickle.dumps(store))
    assert on_worker.get("scored", 3) == {"rows": 7}
    on_worker.close()
    del on_worker
    assert store.folder.exists()
    folder = store.folder
    del store  # the last reference: the folder goes with it
    assert not folder.exists()


def test_the_store_keeps_pieces_compressed_and_gives_them_back_exactly(tmp_path: Path) -> None:
    rows = pd.DataFrame({"customer_id": np.repeat(np.arange(5_000), 20),
                         "event_type": pd.Series(["purchase", "visit"] * 50_000, dtype="str"),
                         "amount": np.round(np.random.default_rng(0).gamma(2.0, 20.0, 100_000), 2)})
    pieces = [rows.iloc[:40_000], None, rows.iloc[40_000:]]
    with PartitionStore.beside(tmp_path) as store:
        starts = store.put_pieces("raw-events", 0, pieces)
        store.put("validated", 0, rows)
        assert starts[1] == starts[2]  # an empty piece takes no room
        assert store.get_piece("raw-events", 0, starts, 1) is None
        pd.testing.assert_frame_equal(store.get_piece("raw-events", 0, starts, 2), pieces[2], check_exact=True)
        pd.testing.assert_frame_equal(store.get("validated", 0), rows, check_exact=True)
        on_disk = [p.stat().st_size for p in sorted(store.folder.iterdir())]
        assert max(on_disk) < len(pickle.dumps(rows)) / 2  # compressed: the disk holds less than the rows


def published_past_list(settings: Settings, bundle: Any, root: Path) -> Path:
    """A list published by the local engine at a date whose horizon has passed in the data."""

    tables = load_tables(settings, require_label=False)
    as_of = tables.end_date - pd.Timedelta(days=settings.churn.horizon_days + 13)
    week = score_week(tables, as_of, bundle, "2", settings, force=True)  # weeks before the model: drifted
    files = standard_writers(week.scores, week.priority_list, week.summary, week.report_html)
    return publish_week(root, week.as_of, files)


def past_list_for_both_engines(settings: Settings, bundle: Any, root: Path) -> tuple[dict[str, Settings], Path]:
    """The same published past list in two output folders, one per engine (a card is written once),
    and each engine's settings; returns the local engine's copy of the list's folder."""
    engines = {}
    for engine in ("local", "dask"):
        engines[engine] = settings.model_copy(deep=True)
        engines[engine].serving.output_dir = str(root / engine)
    folder = published_past_list(settings, bundle, root / "local")
    shutil.copytree(folder, root / "dask" / folder.name)
    return engines, folder


def test_a_past_list_s_report_card_is_the_same_on_both_engines(
        dask_session: Any, project: tuple[Settings, Any], tmp_path: Path) -> None:
    settings, bundle = project
    engines, folder = past_list_for_both_engines(settings, bundle, tmp_path)

    local = update_outcomes(engines["local"], load_tables(settings, require_label=False), log_to_mlflow=False)
    with get_task_stream(dask_session) as stream:
        source = partitioned.outcome_source(read_partitioned(settings, 8), settings)
        got = update_outcomes(engines["dask"], source, log_to_mlflow=False)
    assert "realised_in_partition" in {key_split(t["key"]) for t in stream.data}  # judged on the workers
    assert local.written == got.written == [folder.name]
    card = local.cards[0]
    assert 0 < card["realised_churn_rate"] < 1 and card["groups"]["holdout"] and card["groups"]["unlisted"]
    assert card["model_quality"]["roc_auc"] is not None
    assert got.cards == local.cards
    assert (tmp_path / "dask" / folder.name / "outcome.json").read_bytes() == (folder / "outcome.json").read_bytes()


def test_customers_without_rows_today_are_judged_as_the_local_engine_judges_them(
        dask_session: Any, project: tuple[Settings, Any]) -> None:
    """A listed customer who left the data (no rows in any partition, or hashed to a partition
    with no rows at all) gets the local engine's answer: churned by inactivity, not contacted."""
    settings, _ = project
    tables = load_tables(settings, require_label=False)
    as_of = tables.end_date - pd.Timedelta(days=settings.churn.horizon_days + 13)
    ids = pd.concat([tables.customers["customer_id"].iloc[::7], pd.Series([10**7 + i for i in range(40)])],
                    ignore_index=True)
    source = partitioned.outcome_source(read_partitioned(settings, 16), settings)
    expected = realised(ids, tables, as_of, settings.churn.horizon_days, settings.churn.definition)
    got = source.realised(ids, as_of, settings.churn.horizon_days, settings.churn.definition)
    assert expected[0][-40:].all() and not expected[1][-40:].any()
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert 0 < expected[0].mean() < 1 and expected[1].any()
    for definition in ("inactivity", "explicit"):  # a partition that holds no rows at all
        empty = partitioned.realised_in_partition(Validated(None), ids[-40:], as_of, 90, definition)
        local = realised(ids[-40:], tables, as_of, 90, definition)
        np.testing.assert_array_equal(empty[0], local[0])
        np.testing.assert_array_equal(empty[1], local[1])


def test_the_weekly_run_on_dask_writes_the_cards_and_reports_them_like_the_local_run(
        dask_session: Any, project: tuple[Settings, Any], tmp_path: Path) -> None:
    settings, bundle = project
    engines, folder = past_list_for_both_engines(settings, bundle, tmp_path)

    tables = load_tables(settings, require_label=False)
    local = score_week(tables, None, bundle, "2", engines["local"],
                       outcomes=update_outcomes(engines["local"], tables, log_to_mlflow=False))
    got = partitioned.score_week_partitioned(read_partitioned(settings, 4), None, bundle, "2", engines["dask"],
                                             outcomes=partial(update_outcomes, engines["dask"], log_to_mlflow=False))
    got.discard()
    card = tmp_path / "dask" / folder.name / "outcome.json"
    assert card.read_bytes() == (folder / "outcome.json").read_bytes()
    assert got.summary["decay_alarm"] == local.summary["decay_alarm"] and local.summary["decay_alarm"]["lists"]
    assert got.summary == local.summary | {"input_fingerprint": got.summary["input_fingerprint"]}
    hashes = [s["input_fingerprint"]["events_sha256"] for s in (local.summary, got.summary)]
    assert folder.name in local.report_html and got.report_html == local.report_html.replace(*hashes)


def test_outcomes_flow_on_the_dask_engine(prefect_harness: None, dask_session: Any, project: tuple[Settings, Any],
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``churnflow outcomes`` with ``[compute] engine = "dask"``: the flow runs on the cluster
    (the session's, by address) and writes the card the local engine writes."""

    from churnflow.flows.outcomes_flow import outcomes_flow
    settings, bundle = project
    engines, folder = past_list_for_both_engines(settings, bundle, tmp_path)
    expected = update_outcomes(engines["local"], load_tables(settings, require_label=False), log_to_mlflow=False)

    monkeypatch.setenv("CHURNFLOW_COMPUTE__ENGINE", "dask")
    monkeypatch.setenv("CHURNFLOW_COMPUTE__SCHEDULER_ADDRESS", dask_session.scheduler.address)
    monkeypatch.setenv("CHURNFLOW_SERVING__OUTPUT_DIR", engines["dask"].serving.output_dir)
    with get_task_stream(dask_session) as stream:
        result = outcomes_flow(config=str(settings.root / "churnflow.toml"))
    assert {"realised_in_partition", "validate_into"} <= {key_split(t["key"]) for t in stream.data}
    assert result["written"] == [folder.name] and result["lists"][0]["closed"]
    card = tmp_path / "dask" / folder.name / "outcome.json"
    assert json.loads(card.read_text()) == expected.cards[0]
    assert card.read_bytes() == (folder / "outcome.json").read_bytes()


@pytest.mark.parametrize("decimals", [2, 9])  # many ties; almost none
def test_the_label_free_auc_is_sklearn_s_weighted_auc_without_its_memory(decimals: int) -> None:
    """Every weekly summary estimates the list's ROC-AUC over every scored customer: computed on
    the sorted distinct scores, not on sklearn's doubled sample (gigabytes at 8M customers)."""
    from sklearn.metrics import roc_auc_score

    from churnflow.serving.outcomes import expected_roc_auc

    p = np.round(np.random.default_rng(decimals).beta(1, 3, 5000), decimals)
    doubled = roc_auc_score(np.r_[np.ones(len(p)), np.zeros(len(p))], np.r_[p, p], sample_weight=np.r_[p, 1 - p])
    assert expected_roc_auc(p) == pytest.approx(doubled, abs=1e-12)
    assert expected_roc_auc(np.random.default_rng(0).permutation(p)) == expected_roc_auc(p)  # order-free
    assert np.isnan(expected_roc_auc(np.zeros(10))) and np.isnan(expected_roc_auc(np.array([0.3])))
