"""Validation decisions made from a column's values are made once on the Dask engine.

The local engine decides on whole tables: a text date column's day/month order (or refuses it),
a numeric date column's unit, which undeclared columns look like personal data, whether
``data.end_date`` lies too long after the last event, the leading-zero hint for unknown ids, and
(scoring) whether a numeric model input is "mostly not numbers". The Dask engine validates
partitions, so each case below puts the telling values in some partitions only and checks that
the Dask engine still stops with the local engine's error (same file, column, rule and rows),
or gives its notes and tables. Also: ids differing only in case are reported, ``--as-of`` after
the data is refused on the Dask score and features paths, and local clusters' dashboards take a
free port. Runs on the session's two-worker cluster (``dask_cluster`` in conftest).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("dask.distributed")

import dask

from churnflow.features.contracts import AsOfError, DataValidationError, check_as_of, load_tables
from churnflow.features.demo import generate_demo_data, write_demo_data
from churnflow.features.partitioned import (
    build_features_partitioned,
    build_snapshots_partitioned,
    customer_partition,
    read_partitioned,
    sorted_by_customer,
)
from churnflow.features.settings import Settings, load_settings
from tests.conftest import write_project
from tests.test_dask_parity import AS_OF, dask_snapshots, local_snapshots, train_small_model

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]
N_PARTITIONS = 4


@pytest.fixture
def client(dask_session: object) -> object:
    return dask_session


COLUMNS = {  # text date columns, rows in source order
    "settled by one value": ["01/02/2024", " 03/04/2024", None, "25/12/2023", "05/06/2024", ""] * 40,
    "contradictory": ["01/02/2024", "25/12/2023", "07/08/2024", "12/31/2023"] * 50,
    "mixed formats": ["2024-01-02", "03.04.2024", "20240105", "13.04.2024", "oops"] * 40,
    "ambiguous": ["01-02-2024 10:00", "03-04-24", "11-12-2024"] * 60,
}


@pytest.mark.parametrize("name", list(COLUMNS))
def test_day_month_facts_of_parts_merge_into_the_whole_column_s_decision(name: str) -> None:
    from churnflow.features.dates import (
        DateFormatError,
        DayMonthFacts,
        day_month_facts,
        day_month_order,
        parse_dates,
    )

    values = pd.Series(COLUMNS[name], dtype="str")
    parts = [values[values.index % 3 == i] for i in range(3)]  # rows dealt to three partitions
    merged = DayMonthFacts.merged(day_month_facts(p) for p in parts)
    assert merged == day_month_facts(values)
    try:
        expected: object = parse_dates(values)  # the local engine's decision, on the whole column
    except DateFormatError as exc:
        expected = (exc.reason, exc.examples.to_dict())
    try:
        got: object = parse_dates(values, dayfirst=day_month_order(merged, None))
    except DateFormatError as exc:
        got = (exc.reason, exc.examples.to_dict())
    if isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected)  # type: ignore[arg-type]
    else:
        assert got == expected, name


def test_the_screen_s_samples_of_parts_sampled_again_are_the_whole_column_s() -> None:
    from churnflow.features.personal import SAMPLE, screen_sample

    values = pd.Series([f"c{i}@example.com" if i % 3 else None for i in range(12 * SAMPLE)])
    parts = [screen_sample(values[values.index % 4 == i]) for i in range(4)]
    assert all(len(p) == SAMPLE for p in parts)
    pd.testing.assert_series_equal(screen_sample(pd.concat(parts)).sort_index(), screen_sample(values))


def test_the_screen_s_samples_of_a_table_are_each_column_s_own() -> None:
    """``screen_samples`` hashes the row labels once and shares one sample between the columns
    without gaps: the same values as each column's ``screen_sample``."""
    from churnflow.features.personal import SAMPLE, screen_sample, screen_samples

    n = 3 * SAMPLE
    frame = pd.DataFrame({"full": [f"c{i}@example.com" for i in range(n)],
                          "gaps": [f"+44 20 7946 {i:04d}" if i % 3 else None for i in range(n)],
                          "number": [float(i) if i % 5 else float("nan") for i in range(n)]},
                         index=pd.RangeIndex(n) * 7 + 3)
    samples = screen_samples(frame, ["full", "gaps", "number"])
    for col, sample in samples.items():
        pd.testing.assert_series_equal(sample, screen_sample(frame[col]))
    small = frame.head(SAMPLE // 2)
    for col, sample in screen_samples(small, ["full", "gaps"]).items():
        pd.testing.assert_series_equal(sample, small[col].dropna())


def project_with(tmp_path: Path, change: object) -> Settings:
    """A small project whose customers table is first changed by ``change(customers, partition)``
    (``partition``: each customer's partition among ``N_PARTITIONS``)."""
    data = generate_demo_data(240, seed=11)
    part = customer_partition(data.customers["customer_id"], N_PARTITIONS)
    data = dataclasses.replace(data, customers=change(data.customers.copy(), part))
    write_demo_data(data, tmp_path / "data")
    return load_settings(write_project(tmp_path, n_customers=0))


def refusals(settings: Settings) -> tuple[str, str]:
    """What the local engine and the Dask engine (``N_PARTITIONS`` partitions) say when
    validation stops the project's data."""
    with pytest.raises(DataValidationError) as local_error:
        load_tables(settings)
    with pytest.raises(DataValidationError) as dask_error:
        dask_snapshots(settings, N_PARTITIONS)
    return str(local_error.value), str(dask_error.value)


def day_month_text(days: pd.Series, day_first: bool, ambiguous: bool) -> pd.Series:
    """Dates as d/m/Y (``day_first``) or m/d/Y text; ``ambiguous``: days moved into 1..12, so no
    value says which number is the day."""
    day = ((days.dt.day - 1) % 12 + 1) if ambiguous else days.dt.day
    first, second = (day, days.dt.month) if day_first else (days.dt.month, day)
    return first.map("{:02d}".format) + "/" + second.map("{:02d}".format) + "/" + days.dt.year.astype(str)


def test_day_first_settled_by_one_partition_parses_every_partition(client: object, tmp_path: Path) -> None:
    def change(cu: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
        telling = part == 0  # only partition 0 holds days above 12; elsewhere 03/04/2024 could be either
        text = day_month_text(cu["signup_time"], day_first=True, ambiguous=True)
        return cu.assign(signup_time=text.where(~telling, day_month_text(cu["signup_time"], True, False)))

    settings = project_with(tmp_path, change)
    expected, expected_schema = local_snapshots(settings)
    got, schema = dask_snapshots(settings, N_PARTITIONS)
    assert schema == expected_schema and expected_schema.has_signup
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("case", ["day first here, month first there", "ISO here, day/month there",
                                  "ambiguous everywhere"])
def test_a_column_the_whole_data_refuse_is_refused_by_the_dask_engine(client: object, tmp_path: Path,
                                                                       case: str) -> None:
    def change(cu: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
        days = cu["signup_time"]
        if case == "day first here, month first there":  # each partition alone looks settled
            text = day_month_text(days, True, False).where(part < 2, day_month_text(days, False, False))
        elif case == "ISO here, day/month there":
            text = days.dt.strftime("%Y-%m-%d").where(part == 0, day_month_text(days, True, False))
        else:
            text = day_month_text(days, True, True)
        return cu.assign(signup_time=text)

    settings = project_with(tmp_path, change)
    local, got = refusals(settings)
    assert "signup_time" in local and "data.dayfirst" in local
    assert got == local  # same column, rule, examples and their lines


@pytest.mark.parametrize("mixed", [True, False])
def test_times_with_a_zone_here_and_without_one_there_are_refused_as_locally(client: object, tmp_path: Path,
                                                                            mixed: bool) -> None:
    def change(cu: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
        naive = cu["signup_time"].dt.strftime("%Y-%m-%d %H:%M:%S")  # no partition mixes them
        return cu.assign(signup_time=naive.where((part < 2) | (not mixed), naive + "+02:00"))

    settings = project_with(tmp_path, change)
    if not mixed:  # every value without a zone: both engines parse them alike
        expected, _ = local_snapshots(settings)
        pd.testing.assert_frame_equal(dask_snapshots(settings, N_PARTITIONS)[0], expected, check_exact=True)
        return
    local, got = refusals(settings)
    assert "mixes times with a time zone" in local
    assert got == local  # same column, rule, examples and their lines


def test_unix_times_in_seconds_here_and_milliseconds_there_are_refused_as_locally(client: object,
                                                                                   tmp_path: Path) -> None:
    def change(cu: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
        seconds = cu["signup_time"].astype("int64") // 10**9  # each partition alone has one unit
        return cu.assign(signup_time=seconds.where(part < 2, seconds * 1000))

    settings = project_with(tmp_path, change)
    local, got = refusals(settings)
    assert "signup_time' has dates that cannot be parsed — 240 row(s)" in local
    assert got == local


def test_data_dayfirst_setting_still_decides(client: object, tmp_path: Path) -> None:
    settings = project_with(tmp_path, lambda cu, part: cu.assign(
        signup_time=day_month_text(cu["signup_time"], day_first=False, ambiguous=True)))
    settings.data.dayfirst = False
    expected, _ = local_snapshots(settings)
    got, _ = dask_snapshots(settings, N_PARTITIONS)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("partitions_with_emails", [[0], [0, 1, 2]])
def test_personal_data_screen_decides_for_the_whole_column(client: object, tmp_path: Path,
                                                         partitions_with_emails: list[int]) -> None:
    def change(cu: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
        emails = "c" + cu["customer_id"].astype(str) + "@example.com"
        return cu.assign(reference=emails.where(pd.Series(part, index=cu.index).isin(partitions_with_emails),
                                                cu["plan"]))

    settings = project_with(tmp_path, change)
    tables = load_tables(settings)
    left_out = "reference" not in tables.customers
    assert left_out == (len(partitions_with_emails) == 3)  # 1 partition of 4: no; 3 of 4: most values are e-mails
    assert any("'reference' looks like personal data" in n for n in tables.notes) == left_out
    expected, expected_schema = local_snapshots(settings)
    parts, facts = build_snapshots_partitioned(read_partitioned(settings, N_PARTITIONS), AS_OF, settings)
    assert facts.notes == tuple(tables.notes)
    assert facts.schema == expected_schema
    got = dask.compute(*parts)
    assert all("reference" not in p for p in got if p is not None) == left_out
    pd.testing.assert_frame_equal(sorted_by_customer(got), expected, check_exact=True)


def test_the_dask_score_run_carries_validation_notes_for_the_flow_to_log(client: object, tmp_path: Path) -> None:
    from churnflow.serving.partitioned import score_week_partitioned

    def change(cu: pd.DataFrame, part: pd.Series) -> pd.DataFrame:
        return cu.assign(reference="c" + cu["customer_id"].astype(str) + "@example.com")

    settings = project_with(tmp_path, change)
    notes = load_tables(settings, require_label=False).notes
    assert any("'reference' looks like personal data" in n for n in notes)
    week = score_week_partitioned(read_partitioned(settings, N_PARTITIONS), None, train_small_model(settings), "1",
                                  settings)
    week.discard()
    assert week.notes == notes


def test_unknown_ids_that_match_a_customer_without_leading_zeros_get_the_local_hint(client: object,
                                                                                    tmp_path: Path) -> None:
    data = generate_demo_data(240, seed=11)
    events = data.events.assign(customer_id=data.events["customer_id"].astype(str))  # text here, numbers there

    def partition(text: str) -> int:
        return int(customer_partition(pd.Series([text]), N_PARTITIONS)[0])

    ours = next(i for i in data.customers["customer_id"] if partition(f"00{i}") != partition(str(i)))
    events.loc[events.index[events["customer_id"] == str(ours)][:2], "customer_id"] = f"00{ours}"
    write_demo_data(dataclasses.replace(data, events=events), tmp_path / "data")
    settings = load_settings(write_project(tmp_path, n_customers=0))
    local, got = refusals(settings)
    assert f"'00{ours}' here is '{ours}' in the customers table" in local
    assert got == local


@pytest.mark.parametrize("declared_end", ["the data's end", "a year after it"])
def test_declared_end_is_checked_against_the_latest_event_of_all_partitions(client: object, tmp_path: Path,
                                                                          declared_end: str) -> None:
    data = generate_demo_data(240, seed=11)
    quiet = data.customers["customer_id"][customer_partition(data.customers["customer_id"], N_PARTITIONS) == 0]
    end = data.events["event_time"].max().normalize()
    early = data.events["customer_id"].isin(quiet) & (data.events["event_time"] > end - pd.Timedelta(days=200))
    data = dataclasses.replace(data, events=data.events[~early])  # partition 0 alone went quiet 200 days ago
    write_demo_data(data, tmp_path / "data")
    settings = load_settings(write_project(tmp_path, n_customers=0))
    settings.data.end_date = str((end + pd.Timedelta(days=365 if declared_end == "a year after it" else 0)).date())
    if declared_end == "the data's end":
        expected, _ = local_snapshots(settings)
        got, _ = dask_snapshots(settings, N_PARTITIONS)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        return
    local, got = refusals(settings)
    assert "every customer would look churned" in local
    assert got == local  # one problem, with the data's last event


def test_ids_differing_only_in_case_are_reported_as_locally(client: object, tmp_path: Path) -> None:
    data = generate_demo_data(240, seed=11)
    renamed = {i: f"ab{i}" for i in data.customers["customer_id"]}
    renamed[17] = "AB16"  # customer 17 written like customer 16 in upper case, in every table
    data = dataclasses.replace(data, **{name: getattr(data, name).assign(
        customer_id=getattr(data, name)["customer_id"].map(renamed)) for name in ("customers", "events", "contacts")})
    write_demo_data(data, tmp_path / "data")
    settings = load_settings(write_project(tmp_path, n_customers=0))
    local, got = refusals(settings)
    assert "differ only in upper/lower case" in local
    assert got == local


def test_as_of_after_the_data_is_refused_on_the_dask_score_and_features_paths(client: object,
                                                                               tmp_path: Path) -> None:
    from churnflow.serving.partitioned import score_week_partitioned

    settings = load_settings(write_project(tmp_path, n_customers=300, seed=5))
    tables = load_tables(settings, require_label=False)
    late = tables.end_date + pd.Timedelta(days=9)
    with pytest.raises(AsOfError) as local_error:
        check_as_of(tables, late)  # what the local score and features flows say
    with pytest.raises(AsOfError) as scoring:
        score_week_partitioned(read_partitioned(settings, 2), late, train_small_model(settings), "1", settings)
    with pytest.raises(AsOfError) as features:
        build_features_partitioned(read_partitioned(settings, 2), settings, late)
    assert str(scoring.value) == str(features.value) == str(local_error.value)
    parts, _, day = build_features_partitioned(read_partitioned(settings, 2), settings, late - pd.Timedelta(days=8))
    assert day == tables.end_date + pd.Timedelta(days=1) and len(dask.compute(*parts)) == 2  # the last allowed day


def test_numbers_turned_text_are_counted_on_all_partitions(client: object, tmp_path: Path) -> None:
    from churnflow.features.schema import SchemaMismatchError
    from churnflow.serving.partitioned import score_week_partitioned
    from churnflow.serving.weekly import score_week

    settings = load_settings(write_project(tmp_path, n_customers=300, seed=5))
    bundle = train_small_model(settings)  # credit_limit: a numeric input at training
    path = settings.path("data/customers.parquet")
    customers = pd.read_parquet(path)
    part = customer_partition(customers["customer_id"], N_PARTITIONS)
    limit = customers["credit_limit"]
    customers["credit_limit"] = limit.where((part == 3) | (limit == "?"), limit + " EUR")  # 3 partitions of 4
    customers.to_parquet(path)
    tables = load_tables(settings, require_label=False)
    with pytest.raises(SchemaMismatchError) as local_error:
        score_week(tables, None, bundle, "1", settings, force=True)
    with pytest.raises(SchemaMismatchError) as dask_error:
        score_week_partitioned(read_partitioned(settings, N_PARTITIONS), None, bundle, "1", settings, force=True)
    assert "column 'credit_limit' held numbers at training" in str(local_error.value)
    assert str(dask_error.value) == str(local_error.value)  # counted on all customers, not one partition's


def test_local_clusters_take_a_free_dashboard_port(client: object, tmp_path: Path) -> None:
    from churnflow.flows.engine import dask_task_runner

    assert client.dashboard_link and ":8787/" not in client.dashboard_link  # type: ignore[attr-defined]
    settings = load_settings(write_project(tmp_path, n_customers=0, extra_toml='\n[compute]\nengine = "dask"\n'))
    kwargs = dask_task_runner(settings).cluster_kwargs
    assert kwargs["dashboard_address"] == ":0"
    # the flow's own local cluster starts its workers as churnflow's do (Arrow's system
    # allocator, one thread for the passes over event rows)
    assert kwargs["env"] == {"ARROW_DEFAULT_MEMORY_POOL": "system", "CHURNFLOW_THREADS": "1"}


def test_a_csv_line_refused_in_a_later_block_is_said_in_the_file_s_terms(client: object, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The first block's refusal names its file line when the source is opened; a later block is
    read on a worker, whose parser counts that block's lines: the message names the file and the
    fault, and sends the user to `churnflow validate` for the line (never the parser's wrong one)."""
    import churnflow.features.partitioned as partitioned
    from churnflow.features.sources import SourceError

    events = ["cust_no,event_at,order_value"] + [f"{1 + i % 40},2024-03-01 10:00,{i % 97}.5" for i in range(30_000)]
    events[20_000] = "7,2024-03-01 10:00,1,5"
    (tmp_path / "events.csv").write_text("\n".join(events) + "\n")
    (tmp_path / "customers.csv").write_text("cust_no,joined\n" + "".join(f"{i},2024-01-01\n" for i in range(1, 41)))
    settings = Settings(data={"customers": str(tmp_path / "customers.csv"), "events": str(tmp_path / "events.csv"),
                              "contacts": "", "columns": {"customer_id": "cust_no", "event_time": "event_at",
                                                          "amount": "order_value", "signup_time": "joined"}})
    real = partitioned.read_dask_source
    monkeypatch.setattr(partitioned, "read_dask_source", lambda *a, **k: real(*a, **k, blocksize="128KiB"))
    raw = partitioned.read_partitioned(settings, 4)
    assert raw.events is not None and raw.events.npartitions > 2  # the bad line is in a later block
    with pytest.raises(SourceError, match=r"events.csv: a line has 4 values but the header line names 3 columns.*"
                                          r"`churnflow validate`") as info:
        partitioned.validate_partitions(raw, settings, store=partitioned.PartitionStore.beside(tmp_path / "out"))
    assert "line 2" not in str(info.value) and "C error" not in str(info.value)
