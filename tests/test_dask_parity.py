"""The Dask engine gives the local engine's results: same features, labels, schema, list cut.

One local cluster of two single-thread workers serves the whole session (``dask_cluster`` in
conftest: threads of this process, the machine running the suite is small and shared; real
scheduling and shuffles all the same); every result is compared with the local engine's on the same data.
Skipped without the extra: ``pip install churnflow[dask]``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.distributed")

import dask

from churnflow.features.build import build_snapshots, infer_schema
from churnflow.features.contracts import DataValidationError, load_tables
from churnflow.features.partitioned import (
    ComputeError,
    PartitionStore,
    build_snapshots_partitioned,
    customer_partition,
    dask_client,
    forget_raw,
    keep_raw,
    raw_partition,
    read_partitioned,
    sorted_by_customer,
    write_parts,
)
from churnflow.features.settings import ComputeSettings, Settings, load_settings
from churnflow.serving.partitioned import merge_candidates, partition_candidates
from churnflow.serving.priority import build_priority_list
from churnflow.training.churn_model import model_frame
from tests.conftest import write_project

pytestmark = [
    pytest.mark.timeout(300),  # a lost cluster fails the test, the next one checks it first
    # dask's Parquet reader on pandas 3.1 (dask 2026.8): not ours to fix
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]
AS_OF = [pd.Timestamp("2026-05-01"), pd.Timestamp("2026-06-01")]


@pytest.fixture
def client(dask_session: object) -> object:
    return dask_session


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(write_project(tmp_path_factory.mktemp("project"), n_customers=1500, seed=7))


def local_snapshots(settings: Settings) -> tuple[pd.DataFrame, object]:
    tables = load_tables(settings)
    schema = infer_schema(tables, settings)
    out = build_snapshots(tables, AS_OF, settings, schema)
    return out.sort_values(["as_of", "customer_id"], kind="stable").reset_index(drop=True), schema


def dask_snapshots(settings: Settings, n_partitions: int) -> tuple[pd.DataFrame, object]:
    raw = read_partitioned(settings, n_partitions)
    parts, facts = build_snapshots_partitioned(raw, AS_OF, settings)
    return sorted_by_customer(dask.compute(*parts)), facts.schema


@pytest.fixture(scope="module")
def local(project: Settings) -> tuple[pd.DataFrame, object]:
    return local_snapshots(project)


@pytest.mark.parametrize("n_partitions", [1, 2, 8, 32])
def test_features_and_labels_equal_the_local_engine(client: object, project: Settings, local: tuple,
                                                    n_partitions: int) -> None:
    expected, expected_schema = local
    got, schema = dask_snapshots(project, n_partitions)
    assert schema == expected_schema  # category levels, event types, kept and dropped attributes
    assert expected_schema.categorical_levels and expected_schema.event_types and expected_schema.dropped
    assert expected["label"].nunique() == 2
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("cut", [None, pd.Timestamp("2026-08-15")])  # the features command's --as-of
def test_feature_table_equals_the_features_command_s(client: object, project: Settings, cut: object) -> None:
    from churnflow.features.build import build_features
    from churnflow.features.partitioned import build_features_partitioned
    from churnflow.serving.weekly import scoring_date

    tables = load_tables(project, as_of=cut)
    day = scoring_date(tables, cut)
    schema = infer_schema(tables, project)
    expected = build_features(tables, day, project, schema)
    parts, facts, got_day = build_features_partitioned(read_partitioned(project, 8), project, cut)
    assert (got_day, facts.end_date, facts.schema) == (day, tables.end_date, schema)
    assert expected["customer_id"].is_monotonic_increasing
    pd.testing.assert_frame_equal(sorted_by_customer(dask.compute(*parts)), expected, check_exact=True)


@pytest.mark.parametrize("with_customers_table", [True, False])
def test_partitions_without_customers_or_without_events(client: object, tmp_path: Path,
                                                         with_customers_table: bool) -> None:
    from churnflow.features.demo import generate_demo_data, write_demo_data

    data = generate_demo_data(40, seed=3)
    silent = data.customers["customer_id"][customer_partition(data.customers["customer_id"], 16) == 2]
    assert len(silent) == 6  # partitions 4 and 13 hold no customer at all
    data = dataclasses.replace(data, events=data.events[~data.events["customer_id"].isin(silent)],
                               contacts=data.contacts[~data.contacts["customer_id"].isin(silent)])
    settings = load_settings(write_project(tmp_path, n_customers=0))
    write_demo_data(data, tmp_path / "data")
    if not with_customers_table:  # customers are then the ids seen in the events
        settings.data.customers = ""
        # settings naming customers-table columns are refused without that table (both engines)
        settings.data.columns.churn_time = settings.features.value_column = ""
        settings.data.columns.pii = []
    expected, expected_schema = local_snapshots(settings)
    assert expected["customer_id"].isin(silent).any() == with_customers_table  # scored without any event
    got, schema = dask_snapshots(settings, 16)
    assert schema == expected_schema
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_events_of_an_unknown_customer_in_a_partition_without_customers_are_reported(
        client: object, tmp_path: Path) -> None:
    from churnflow.features.demo import generate_demo_data, write_demo_data

    data = generate_demo_data(40, seed=3)
    assert not (customer_partition(data.customers["customer_id"], 16) == 4).any()  # partition 4 holds no customer
    stranger = next(i for i in range(10**6, 10**6 + 1000) if customer_partition(pd.Series([i]), 16)[0] == 4)
    data = dataclasses.replace(data, events=pd.concat([data.events, data.events.iloc[:2].assign(customer_id=stranger)],
                                                      ignore_index=True))
    write_demo_data(data, tmp_path / "data")
    settings = load_settings(write_project(tmp_path, n_customers=0))
    with pytest.raises(DataValidationError) as local_error:
        load_tables(settings)
    with pytest.raises(DataValidationError) as dask_error:
        dask_snapshots(settings, 16)
    assert "unknown customer" in str(local_error.value)
    assert str(dask_error.value) == str(local_error.value)


def test_drift_bin_counts_add_up_across_partitions(client: object, project: Settings, local: tuple) -> None:
    from churnflow.features.profile import bin_counts, combine_counts, fit_reference

    expected, schema = local
    reference = fit_reference(expected, None, schema)
    parts, _ = build_snapshots_partitioned(read_partitioned(project, 8), AS_OF, project)
    counts = dask.compute(*[dask.delayed(bin_counts)(reference, part) for part in parts])
    assert combine_counts(counts) == bin_counts(reference, expected)


def test_partitions_written_to_a_parquet_folder_read_back_as_the_local_table(
        client: object, project: Settings, local: tuple, tmp_path: Path) -> None:
    parts, _ = build_snapshots_partitioned(read_partitioned(project, 4), AS_OF, project)
    written = write_parts(parts, tmp_path / "snapshots")
    assert [p.name for p in written] == [f"part-{i:05d}.parquet" for i in range(4)]
    back = sorted_by_customer([pd.read_parquet(tmp_path / "snapshots")])
    pd.testing.assert_frame_equal(back, local[0], check_exact=True)
    with pytest.raises(ComputeError, match="not empty"):
        write_parts(parts, tmp_path / "snapshots")


def test_each_customer_s_rows_share_one_partition(client: object, project: Settings, tmp_path: Path) -> None:
    raw = read_partitioned(project, 8)
    seen: set[int] = set()
    with PartitionStore.beside(tmp_path) as store:
        index = keep_raw(raw, store).compute()
        assert all(len(index.blocks[t]) == raw.present()[t].npartitions for t in index.tables)
        for i in range(8):
            cu, ev, co = raw_partition(store, index, i)
            ids = set(cu["customer_id"])
            assert ids and not ids & seen, f"partition {i} is empty or shares customers"
            assert set(ev["customer_id"]) <= ids and set(co["customer_id"]) <= ids
            assert (customer_partition(cu["customer_id"], 8) == i).all()
            assert ev["_row"].is_monotonic_increasing  # read back in file order
            assert list(ev.columns) == [*raw.events.columns.drop("_partition")]
            seen |= ids
        forget_raw(store, index)
        assert not list(store.folder.iterdir())
    assert len(seen) == 1500


def test_partition_of_an_id_is_stable_across_types_and_runs() -> None:
    as_int = customer_partition(pd.Series([1, 42, 1_000_003, 7]), 32)
    assert (customer_partition(pd.Series([1.0, 42.0, 1_000_003.0, 7.0]), 32) == as_int).all()
    assert (customer_partition(pd.Series(["1", "42", "1000003", "7"]), 32) == as_int).all()
    # Fixed values: a fixed-key hash, unlike Python's salted hash(), gives them in every process.
    assert as_int.tolist() == [6, 28, 16, 0]
    assert customer_partition(pd.Series(["C-001", "C-002"]), 8).tolist() == [4, 1]
    # ids differing only in case meet (validation reports them), also beyond ASCII ('ß' is 'ss')
    assert customer_partition(pd.Series(["c-001", "STRASSE", "straße"]), 8).tolist() == [4, 3, 3]


def write_folder(frame: pd.DataFrame, folder: Path, n_files: int) -> Path:
    """``frame`` as a folder of Parquet files (several input blocks; a name ending in .parquet,
    as Spark writes them, so the local engine reads the folder too)."""
    folder.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        frame.iloc[chunk].to_parquet(folder / f"part-{i}.parquet")
    return folder


def test_csv_sql_and_parquet_folder_sources_give_the_same_features(client: object, project: Settings, local: tuple,
                                                    tmp_path: Path) -> None:
    import sqlalchemy as sa

    data = {name: pd.read_parquet(project.path(f"data/{name}.parquet")) for name in ("customers", "events", "contacts")}
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    data["customers"].to_sql("customers", engine, index=False)
    engine.dispose()
    lines = data["contacts"].to_csv(index=False).splitlines()
    lines.insert(11, ",,,")  # a row of nothing (Excel's): skipped by both readers, later rows keep their line
    (tmp_path / "contacts.csv").write_text("\n".join(lines) + "\n")
    settings = project.model_copy(deep=True)
    settings.data.customers = f"sqlite:///{tmp_path / 'crm.db'}"
    settings.data.customers_table = "customers"
    settings.data.events = str(write_folder(data["events"], tmp_path / "events.parquet", 3))
    settings.data.contacts = str(tmp_path / "contacts.csv")
    expected, expected_schema = local_snapshots(settings)
    assert expected["customer_id"].dtype == "str"  # a CSV's ids are text: every table's ids compared as text
    got, schema = dask_snapshots(settings, 2)
    assert schema == expected_schema
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_rows_after_a_blank_line_of_a_csv_are_reported_at_their_file_line(client: object, project: Settings,
                                                                         tmp_path: Path) -> None:
    contacts = pd.read_parquet(project.path("data/contacts.parquet"))
    contacts.loc[[30, 400], "customer_id"] = 999_999  # unknown customers, after the blank line
    lines = contacts.to_csv(index=False).splitlines()
    lines.insert(11, ",,,")  # a row of nothing: skipped, not renumbering the rows after it
    (tmp_path / "contacts.csv").write_text("\n".join(lines) + "\n")
    settings = project.model_copy(deep=True)
    settings.data.contacts = str(tmp_path / "contacts.csv")
    with pytest.raises(DataValidationError) as local_error:
        load_tables(settings)
    with pytest.raises(DataValidationError) as dask_error:
        dask_snapshots(settings, 4)
    assert [p.rows for p in dask_error.value.problems] == [p.rows for p in local_error.value.problems]
    assert str(dask_error.value) == str(local_error.value) and "line 33" in str(local_error.value)


def test_validation_reports_every_partition_s_problems_like_the_local_engine(client: object, project: Settings,
                                                                           tmp_path: Path) -> None:
    events = pd.read_parquet(project.path("data/events.parquet"))
    events.loc[[3, 5000, 20000], "amount"] = -1.0  # customers in different partitions
    events.loc[[7, 15000], "customer_id"] = 999_999  # unknown customer
    settings = project.model_copy(deep=True)
    settings.data.events = str(write_folder(events, tmp_path / "events.parquet", 3))  # rows numbered across files
    with pytest.raises(DataValidationError) as local_error:
        load_tables(settings)
    with pytest.raises(DataValidationError) as dask_error:
        dask_snapshots(settings, 4)

    def found(error: pytest.ExceptionInfo[DataValidationError]) -> list[tuple]:
        # the same rows and counts; values compared as numbers (pandera may show 999999 as 999999.0)
        return sorted((p.table, p.column, p.rule, p.count, tuple(p.rows), tuple(float(v) for v in p.values))
                      for p in error.value.problems)

    assert len(found(dask_error)) == 2
    assert found(dask_error) == found(local_error)
    assert str(dask_error.value).splitlines()[-1] == str(local_error.value).splitlines()[-1]  # the hint

    settings.data.drop_invalid_rows = True
    expected, _ = local_snapshots(settings)
    parts, facts = build_snapshots_partitioned(read_partitioned(settings, 4), AS_OF, settings)
    pd.testing.assert_frame_equal(sorted_by_customer(dask.compute(*parts)), expected, check_exact=True)
    assert facts.dropped_rows == load_tables(settings).dropped_rows == {"events.parquet": 5}


def test_capacity_cut_from_partition_top_k_equals_the_local_list(client: object, project: Settings) -> None:
    rng = np.random.default_rng(7)
    n = 4000
    scored = pd.DataFrame({
        "customer_id": np.arange(1, n + 1),
        "as_of": pd.Timestamp("2026-06-01"),
        "churn_probability": rng.choice([0.1, 0.3, 0.6, 0.9], n),  # ties, broken by customer id
        "value_at_risk": rng.choice([0.0, 50.0, 120.0], n),
        "segment": "loyal",
    })
    contacts = pd.DataFrame({"customer_id": rng.choice(scored["customer_id"], 400),
                             "contact_time": pd.Timestamp("2026-05-20")})  # inside the cool-down
    settings = project.model_copy(deep=True)
    settings.serving.capacity, settings.serving.min_probability = 50, 0.2
    expected, _ = build_priority_list(scored, settings, contacts)

    part = customer_partition(scored["customer_id"], 8)
    contact_part = customer_partition(contacts["customer_id"], 8)
    futures = [client.submit(partition_candidates, scored[part == i], settings, contacts[contact_part == i])
               for i in range(8)]
    candidates = merge_candidates(client.gather(futures))
    assert len(candidates) < len(scored) / 2
    got, _ = build_priority_list(candidates, settings, contacts)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True)


def test_unreachable_scheduler_is_a_clear_error() -> None:
    compute = ComputeSettings(engine="dask", scheduler_address="tcp://127.0.0.1:9")
    with pytest.raises(ComputeError, match=r"compute.scheduler_address"), dask_client(compute, timeout="2s"):
        pass


def test_a_flow_on_an_unreachable_scheduler_stops_before_it_starts(tmp_path: Path) -> None:
    """``churnflow features`` on a scheduler address where nothing listens: exit 2 and what to
    do, at once (the runner's client would wait 30 s, then print distributed's traceback)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as closed:  # a port that was free a moment ago: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = write_project(tmp_path, n_customers=50)
    env = dict(os.environ, CHURNFLOW_COMPUTE__ENGINE="dask",
               CHURNFLOW_COMPUTE__SCHEDULER_ADDRESS=f"tcp://127.0.0.1:{port}")
    done = subprocess.run([sys.executable, "-m", "churnflow.flows.cli", "features", "--config", str(config),
                           "--out", str(tmp_path / "f.parquet")], capture_output=True, text=True, env=env, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in out and "Traceback" not in out
    assert not (tmp_path / "f.parquet").exists()


def test_the_workers_scratch_folder_is_made_or_refused_with_its_setting(tmp_path: Path) -> None:
    from churnflow.features.partitioned import worker_directory

    settings = load_settings(write_project(tmp_path, n_customers=0))
    settings.compute.local_directory = "scratch/dask"
    assert worker_directory(settings.compute, settings) == str(tmp_path / "scratch" / "dask")
    assert (tmp_path / "scratch" / "dask").is_dir()
    (tmp_path / "a_file").write_text("x")
    settings.compute.local_directory = "a_file/dask"
    with pytest.raises(ComputeError, match=r"compute.local_directory .*a_file/dask cannot be the workers' scratch"):
        worker_directory(settings.compute, settings)
    settings.compute.local_directory = ""
    assert worker_directory(settings.compute, settings) is None


def test_compute_settings_from_toml_and_refused_typos(tmp_path: Path) -> None:
    from churnflow.features.settings import ConfigError

    config = write_project(tmp_path, n_customers=0, extra_toml=(
        '\n[compute]\nengine = "dask"\nscheduler_address = "tcp://scheduler:8786"\nn_partitions = 64\n'))
    compute = load_settings(config).compute
    assert (compute.engine, compute.scheduler_address, compute.n_partitions) == ("dask", "tcp://scheduler:8786", 64)
    assert load_settings(write_project(tmp_path / "default", n_customers=0)).compute.engine == "local"
    with pytest.raises(ConfigError, match="compute.engine"):
        load_settings(config, compute={"engine": "spark"})


@pytest.fixture(scope="module")
def small_model(project: Settings) -> object:
    return train_small_model(project)


def train_small_model(project: Settings) -> object:
    """A small real model (booster, identity calibrator, segments, drift reference) on the project."""
    import xgboost as xgb

    from churnflow.features.build import build_features
    from churnflow.features.profile import fit_reference
    from churnflow.features.segments import fit_segments
    from churnflow.training.bundle import ModelBundle
    from churnflow.training.calibration import Calibrator

    tables = load_tables(project)
    schema = infer_schema(tables, project)
    feats = build_features(tables, tables.end_date - pd.Timedelta(days=89), project, schema)
    label = (np.random.default_rng(0).random(len(feats)) < 0.3).astype(int)
    booster = xgb.train({"max_depth": 3, "nthread": 1, "seed": 0},
                        xgb.DMatrix(model_frame(feats, schema.features, schema.categorical_levels), label=label, enable_categorical=True), 5)
    bundle = ModelBundle(booster=booster, calibrator=Calibrator(method="identity"), schema=schema, best_iteration=4,
                         segments=fit_segments(feats, schema, project.features.value_column))
    return dataclasses.replace(bundle, reference=fit_reference(feats, bundle.predict_proba(feats), schema))


@pytest.mark.parametrize("weeks_back", [0, 6])  # this week's run; re-scoring an earlier week (BG/NBD refit)
def test_weekly_outputs_equal_the_local_engine(client: object, project: Settings, small_model: object,
                                               weeks_back: int) -> None:
    from churnflow.serving.partitioned import score_week_partitioned
    from churnflow.serving.publish import ScoresFile, write_parquet
    from churnflow.serving.weekly import score_week

    tables = load_tables(project, require_label=False)
    as_of = tables.end_date + pd.Timedelta(days=1) - pd.Timedelta(weeks=weeks_back)
    assert (as_of < pd.Timestamp(small_model.schema.btyd["as_of"])) == bool(weeks_back)
    previous = load_tables(project).customers[["customer_id"]].iloc[::40]  # last week's list: status, dropped
    local = score_week(tables, as_of, small_model, "3", project, previous_list=previous, force=True)
    got = score_week_partitioned(read_partitioned(project, 8), as_of, small_model, "3", project,
                                 previous_list=previous, force=True)  # (an earlier week drifts from the model's)
    assert len(local.scores) > 1000 and len(local.priority_list) >= project.serving.capacity
    assert local.priority_list["reason_1"].ne("").all() and len(local.dropped)
    pd.testing.assert_frame_equal(got.priority_list, local.priority_list, check_exact=True)
    pd.testing.assert_frame_equal(got.dropped, local.dropped, check_exact=True)
    pd.testing.assert_frame_equal(got.drift, local.drift, check_exact=True)
    fingerprint = {k: v for k, v in local.summary["input_fingerprint"].items() if not k.endswith("_sha256")}
    assert got.summary == local.summary | {"input_fingerprint": got.summary["input_fingerprint"]}
    assert got.summary["input_fingerprint"].items() >= fingerprint.items()  # rows, dates; hashes are the engine's
    assert got.report_html == local.report_html.replace(*[s["input_fingerprint"]["events_sha256"]
                                                          for s in (local.summary, got.summary)])
    # scores.parquet, byte for byte: written by the workers in pieces, merged in customer order
    assert isinstance(got.scores, ScoresFile) and len(got.scores) == len(local.scores)
    local_file = Path(project.path("local.parquet"))
    write_parquet(local.scores, local_file)
    assert got.scores.path.read_bytes() == local_file.read_bytes()
    assert got.scores.path.parent.name.startswith(f".{got.as_of.date()}.scores-")  # hidden beside the dated folders
    got.discard()
    assert not got.scores.path.parent.exists()


def test_empty_sources_are_refused_like_the_local_engine(client: object, project: Settings, tmp_path: Path) -> None:
    settings = project.model_copy(deep=True)
    for name in ("customers", "events"):
        frame = pd.read_parquet(project.path(f"data/{name}.parquet"))
        frame.iloc[:0].to_parquet(tmp_path / f"{name}.parquet")
        setattr(settings.data, name, str(tmp_path / f"{name}.parquet"))
    with pytest.raises(DataValidationError, match="no rows"):
        dask_snapshots(settings, 2)
