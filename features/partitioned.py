"""The Dask engine's foundation: customer partitions, read and built with the local functions.

Design (``[compute] engine = "dask"``)
-------------------------------------
*What runs where.* The three sources are read as Dask DataFrames (Parquet file or folder, CSV,
SQL table) and repartitioned by a stable hash of the customer id (:func:`customer_partition`),
so partition *i* of the customers, events and contacts holds every row of the same customers.
Each worker then runs, per partition and on plain pandas frames, exactly the functions of the
local engine: ``validate_tables`` → ``build_snapshots`` (``build_features`` + labels). There is
no second implementation of any rule; this module only moves rows and merges summaries.

*What is global,* decided once on the client from small per-partition summaries: the end of
the data (latest event day), every validation problem (all partitions' problems in one error,
as locally), and the feature schema. ``infer_schema`` itself decides the schema, on a proxy
``Tables`` that is exact for its rules: the distinct attribute rows of all partitions (personal
and excluded columns blanked first, so names and e-mails never travel) and the merged event-type
counts. BG/NBD is fitted once on all partitions' histories (``global_btyd``: distinct histories
with counts add up exactly), at the day after the data end and at each earlier as-of date. Drift
bin counts add up across partitions (``features.profile.combine_counts``), and the
capacity cut is a top-k per partition followed by a global merge (``serving.partitioned``).

*Determinism.* Every row carries its position in the source (``_row``), and a partition's rows
are read back block by block in source order (:func:`keep_raw`); they are put back in source
order before anything runs all the same, so the local functions see each customer's rows in the
same order as on one machine, and even floating-point sums come out bit-identical. Numbering the
rows costs one pass that counts the rows of each input block (Parquet row counts, CSV blocks).

*Pointing churnflow at a cluster.* Start a scheduler and workers that can import churnflow and
read the data paths (``dask scheduler`` / ``dask worker tcp://host:8786``, or any Dask
deployment), then set ``[compute] engine = "dask"`` and ``scheduler_address = "tcp://host:8786"``
in ``churnflow.toml``. Without an address, :func:`dask_client` starts a local cluster of
``n_workers`` processes with ``memory_limit`` each and stops it at the end.

*Weekly scoring* on the engine is ``serving.partitioned.score_week_partitioned`` (the same
outputs as ``score_week``), run by the score flow through prefect-dask's ``DaskTaskRunner``
(``flows.engine``); so is the features command (:func:`build_features_partitioned`). Training
on the engine (snapshots per partition, ``xgboost.dask``, Optuna trials on the workers) is
``training.distributed``'s. Known limits: the schema proxy holds one row per distinct
attribute combination, so identifier-like attribute columns keep it near one row per customer
(exclude them with ``features.exclude``); a text column with more than 20,000 distinct values
is typed from a different subset of its values than locally, and a tie for the eighth most
frequent event type may be broken differently.

*Validation decisions taken from a column's values* are made once too (``validate_partitions``).
A text date column's day/month order (or its refusal: ambiguous, contradictory, mixed formats),
the unit of a numeric date column and the personal-data screen would otherwise be decided per
partition: 01/02/2026 here cannot be settled by a 13/02 elsewhere, and a column that looks like
e-mails in one partition only would be left out there alone. Each partition validates with its
own decisions and returns their facts (``contracts.ValueFacts``: the first day/month values of
each kind by source row, counts of numbers per unit range, and the screen's sample, chosen by a
hash of the row number, so the partitions' samples re-sampled are the whole table's); the
decisions of the merged facts are the local engine's. Only when some partition decided otherwise
are the partitions validated again, with those decisions. ``data.end_date`` is checked against
the latest event of all partitions, and unknown ids that match a customer once leading zeros are
ignored ('007' vs 7, hashed to different partitions) get the local engine's hint, once the
problems are merged. A text date column mixing values with and without a time zone is refused
when the whole column mixes them, though no partition may (``dates.ZoneFacts``). Still
per partition: which values a month-name column's format is checked on (the local engine
checks a sample spread over the whole column), and whether float ids are whole numbers.

*Memory.* The engine makes passes over the partitions, and nothing of the data stays in worker
memory between them (:class:`PartitionStore`). The rows are moved to their partitions by hand,
not by Dask's shuffle (:func:`keep_raw`): each input block is split by partition into one file of
pieces; validation reads a partition's pieces of every block and writes its validated tables,
and every later pass reads those again. A task holds one input block or one partition, so the
engine needs memory for a block and a partition (``compute.n_partitions``), not for the data.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import pickle
import shutil
import socket
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churnflow.features.btyd import Histories, fit_histories
from churnflow.features.build import (
    MAX_EVENT_TYPES,
    btyd_histories,
    build_snapshots,
    infer_schema,
    latest_as_of,
    with_btyd_params,
)
from churnflow.features.contracts import (
    MAX_EXAMPLES,
    DataValidationError,
    Decisions,
    Problem,
    Tables,
    ValueFacts,
    check_as_of,
    clean_ids,
    compare_ids_as_text,
    cut_at,
    decide,
    declared_end_problem,
    id_hint,
    loose_ids,
    merge_facts,
    source_kinds,
    source_names,
    unknown_id_values,
    validate_tables,
    value_facts,
)
from churnflow.features.errors import ChurnflowError
from churnflow.features.io import pid_alive
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import ComputeSettings, Settings
from churnflow.features.sources import (
    SourceError,
    is_database_url,
    skip_blank_rows,
    source_kind,
    text_options,
    trimmed,
    unreadable,
    values_refused,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from dask.delayed import Delayed
    from distributed import Client

PARTITION = "_partition"
ROW = "_row"
"""Row number in the source (as a full read would index it): restores source order, and names
the rows a validation problem is about. Until the rows reach their partitions, the input block
and the row within it (``block << BLOCK_BITS | row``): no pass counts the rows of every block first."""
BLOCK_BITS = 32
_RESERVED = ("customer_id", "signup_time", "churn_time", "label")
TABLES = ("customers", "events", "contacts")
VALIDATED = "validated"
"""The :class:`PartitionStore` kind of validated partitions."""


WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "CHURNFLOW_THREADS": "1"}
"""Environment of the worker processes of churnflow's local clusters (and of the Prefect task
runner's): Arrow's own allocator keeps freed memory for reuse, which a worker's memory limit
counts as its own; the system allocator hands it back. The passes over event rows run on one
thread (``features.compiled.THREADS``): the cluster already runs a task per worker thread."""


class ComputeError(ChurnflowError, RuntimeError):
    """The Dask engine cannot start or reach its cluster."""


# ---- the cluster -------------------------------------------------------------------------------


def unreachable_scheduler(address: str, reason: str) -> ComputeError:
    """What to do when nothing answers at the configured scheduler's address."""
    return ComputeError(f"cannot reach the Dask scheduler at {address} (compute.scheduler_address): {reason}. "
                        "Start it (`dask scheduler`, then `dask worker <its address>` on each machine), check "
                        "the address, or leave compute.scheduler_address empty to have churnflow start a local "
                        "cluster")


PROBE_TIMEOUT = 10.0
"""Seconds to wait for the scheduler's port to answer before the run starts."""


def check_scheduler_reachable(address: str) -> None:
    """Fail before the flow starts, in the user's words, when nothing answers at the scheduler's
    address: the runner's client would wait its timeout and end in distributed's traceback."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location, 8786)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except OSError as exc:
        raise unreachable_scheduler(address, "no answer" if isinstance(exc, TimeoutError)
                                    else exc.strerror or str(exc)) from None


def worker_directory(compute: ComputeSettings, settings: Settings | None = None) -> str | None:
    """``compute.local_directory`` (resolved against the config folder with ``settings``), made
    if missing; ``None`` for Dask's default. A folder the workers cannot write is said here, with
    its setting: each starting worker would log distributed's traceback, then the run fail."""
    if not compute.local_directory:
        return None
    path = settings.path(compute.local_directory) if settings is not None else Path(compute.local_directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        raise ComputeError(f"compute.local_directory {path} cannot be the workers' scratch folder: "
                           f"{exc.strerror or exc}; set it to a folder they may write, or leave it empty for "
                           "the temp folder") from None
    return str(path)


@contextmanager
def dask_client(compute: ComputeSettings, settings: Settings | None = None, timeout: str = "30s",
                processes: bool = True) -> Iterator[Client]:
    """A client of the configured cluster: ``scheduler_address``, else a local one we stop after.

    ``settings`` resolves a relative ``local_directory`` against the config folder;
    ``processes=False`` runs the local workers as threads of this process (tests, debugging).
    """
    from distributed import Client, LocalCluster

    if compute.scheduler_address:
        try:
            client = Client(compute.scheduler_address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise unreachable_scheduler(compute.scheduler_address, str(exc)) from exc
        with client:
            yield client
        return
    with LocalCluster(n_workers=compute.n_workers, threads_per_worker=compute.threads_per_worker,
                      memory_limit=compute.memory_limit, local_directory=worker_directory(compute, settings),
                      processes=processes, dashboard_address=":0",
                      **({"env": dict(WORKER_ENV)} if processes else {})) as cluster, Client(cluster) as client:
        yield client


@contextmanager
def worker_loss_as_error(what: str) -> Iterator[None]:
    """A task whose workers kept dying (``distributed.scheduler.allowed-failures`` times) as a
    ``ComputeError`` that says what to do; Dask itself re-runs a lost worker's tasks before that."""
    from distributed import KilledWorker

    try:
        yield
    except KilledWorker as exc:
        raise ComputeError(
            f"{what} stopped: the Dask workers running {exc.task!r} died ({exc}). Nothing was published. "
            "A worker that runs out of memory is killed: raise compute.memory_limit or compute.n_partitions "
            "(smaller partitions), then run again."
        ) from exc


# ---- the partitions between passes ------------------------------------------------------------


class PartitionStore:
    """Where the engine keeps each partition's results between its passes: one compressed pickle
    per partition and kind (:func:`packed`), in a hidden folder ``.partitions-<host>-<pid>-<n>`` of the output folder.

    Why disk and not worker memory: the engine makes several passes over the partitions (validate,
    decide, cut and score, pick the list's rows, write the scores). Persisted in worker memory,
    the partitions held the whole data in the cluster, which 8M customers did not fit (2 × 2 GiB);
    on disk, a task holds one partition at a time and no pass keeps the data in the cluster. The
    folder must be on storage every worker reaches (on a real cluster, the shared output folder,
    which publishing needs anyway). It holds the customers' rows as read, personal columns
    included, while the run lasts: it needs the protection of the data sources themselves. It is removed by :meth:`close` (or a ``with``
    block), else when the last object referring to it is gone, or at exit; leftovers of a killed
    process of this machine are removed by the next store made in the same output folder.
    A store sent to a worker is a plain reference to the folder: only the client's removes it.
    """

    _PREFIX = ".partitions-"
    _made = itertools.count()

    def __init__(self, folder: Path, owner: bool = True) -> None:
        self.folder = Path(folder)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.folder), True) if owner else None

    @classmethod
    def beside(cls, output_root: Path) -> PartitionStore:
        """A new, empty store in ``output_root`` (created when missing)."""
        root = Path(output_root)
        root.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for old in root.glob(f"{cls._PREFIX}{host}-*"):
            pid = old.name.removeprefix(f"{cls._PREFIX}{host}-").split("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        folder = root / f"{cls._PREFIX}{host}-{os.getpid()}-{next(cls._made)}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return cls(folder)

    def put(self, kind: str, number: int, value: Any) -> None:
        """Keep ``value`` as partition ``number``'s ``kind`` (written aside, then renamed: a
        worker dying mid-write leaves no half file; a re-run task overwrites it)."""
        target = self._path(kind, number)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}-{threading.get_ident()}")
        with open(partial, "wb") as fh:
            fh.write(packed(value))
        partial.replace(target)

    def get(self, kind: str, number: int) -> Any:
        """Partition ``number``'s ``kind`` as :meth:`put` kept it."""
        with open(self._path(kind, number), "rb") as fh:
            return unpacked(fh.read())

    def remove(self, kind: str, number: int) -> None:
        """Forget partition ``number``'s ``kind`` (read for the last time: the disk holds the data once)."""
        self._path(kind, number).unlink(missing_ok=True)

    def put_pieces(self, kind: str, number: int, pieces: Sequence[Any | None]) -> np.ndarray:
        """Keep ``pieces`` one after another in one file (written aside, then renamed, as
        :meth:`put`); returns where each starts and the file's end, for :meth:`get_piece`. A
        piece that is None takes no room."""
        target = self._path(kind, number)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}-{threading.get_ident()}")
        starts = np.zeros(len(pieces) + 1, dtype=np.int64)
        with open(partial, "wb") as fh:
            for i, piece in enumerate(pieces):
                starts[i] = fh.tell()
                if piece is not None:
                    fh.write(packed(piece))
            starts[-1] = fh.tell()
        partial.replace(target)
        return starts

    def get_piece(self, kind: str, number: int, starts: np.ndarray, piece: int) -> Any | None:
        """Piece ``piece`` of partition ``number``'s ``kind`` (:meth:`put_pieces`), None if empty."""
        begin, end = int(starts[piece]), int(starts[piece + 1])
        if begin == end:
            return None
        with open(self._path(kind, number), "rb") as fh:
            fh.seek(begin)
            return unpacked(fh.read(end - begin))

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> PartitionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return PartitionStore, (self.folder, False)

    def __dask_tokenize__(self) -> str:
        return f"PartitionStore:{self.folder}"

    def _path(self, kind: str, number: int) -> Path:
        return self.folder / f"{kind}-{number:05d}.pkl"


def packed(value: Any) -> bytes:
    """``value`` pickled and compressed (Zstandard, through pyarrow): the store holds the data
    about three times smaller on disk (a partition's rows as pandas lay them out compress well),
    for less CPU than the passes spend on them."""
    import pyarrow as pa

    raw = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(raw).to_bytes(8, "little") + pa.compress(raw, codec="zstd", asbytes=True)


def unpacked(data: bytes) -> Any:
    """What :func:`packed` packed (our own files, in a folder this run made: safe to unpickle)."""
    import pyarrow as pa

    size = int.from_bytes(data[:8], "little")
    return pickle.loads(pa.decompress(memoryview(data)[8:], decompressed_size=size, codec="zstd", asbytes=True))


# ---- partitioning ------------------------------------------------------------------------------


def customer_partition(ids: pd.Series, n_partitions: int) -> np.ndarray:
    """Partition number of each customer id: the same in every table, process and run.

    The id is hashed as text (pandas' fixed-key SipHash), so customer 42 lands in the same
    partition whether a table stores it as 42, 42.0 (an integer column with blanks) or "42",
    the three spellings ``validate_tables`` treats as the same customer. The text is case-folded
    first: ids differing only in case ('AB12', 'ab12'), which validation reports, meet in one
    partition (they are still different ids).
    """
    if pd.api.types.is_float_dtype(ids):
        finite = ids.dropna()
        if (finite == finite.round()).all():
            ids = ids.astype("Int64")
    # Each distinct id is hashed once (events repeat an id ~20 times; text hashing is the cost).
    codes, distinct = pd.factorize(ids, use_na_sentinel=False)
    text = pd.Series(distinct, dtype=ids.dtype).astype("string[pyarrow]")
    folded = text.str.lower()  # Arrow's; casefold (Python's) only changes more for non-ASCII text
    folded = folded if folded.str.isascii().fillna(True).all() else text.str.casefold()
    hashed = pd.util.hash_pandas_object(folded.astype(object), index=False).to_numpy()
    return (hashed % np.uint64(n_partitions)).astype(np.int64)[codes]


def _keyed(frame: pd.DataFrame, id_column: str, n_partitions: int,
           partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    block = partition_info["number"] if partition_info else 0
    keyed = frame.assign(**{ROW: (block << BLOCK_BITS) + np.arange(len(frame), dtype=np.int64)})
    return keyed.assign(**{PARTITION: customer_partition(keyed[id_column], n_partitions)})


def partition_by_customer(frame: dd.DataFrame, id_column: str, n_partitions: int, what: str = "source"
                          ) -> dd.DataFrame:
    """``frame``'s input blocks, every row keyed with its customer's partition (``_partition``)
    and its place in the source (``_row``: input block and row within it, which
    :func:`raw_partition` turns into the row number a full read gives, once every block's length
    is known); :func:`keep_raw` moves the rows to their partitions.
    """
    if id_column not in frame.columns:
        raise DataValidationError([Problem(what, id_column, "is missing (mapped to 'customer_id' in [data.columns]); "
                                           f"columns present: {list(frame.columns)[:20]}", [], [], 0)])
    return frame.map_partitions(_keyed, id_column, n_partitions, meta=_keyed(frame._meta, id_column, n_partitions))


def in_source_order(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """One partition's rows back in source order, indexed by their row number in the source (as a
    full read would be), so the local functions see what they would see on one machine."""
    if frame is None:
        return None
    if ROW not in frame:
        return frame.reset_index(drop=True)
    return frame.sort_values(ROW, kind="stable").set_index(ROW).rename_axis(None)


# ---- reading -----------------------------------------------------------------------------------


PARQUET_BLOCK = "8MiB"
"""Largest input block read from a Parquet file (by the file's own uncompressed sizes; never less
than one row group): a task that splits a block by partition (:func:`split_block`) holds the
block, its rows in partition order and their pieces packed, so worker memory follows it (with
Dask's shuffle, 2M-row blocks peaked at 1.5 GB per 2 GiB worker, benchmarks/README.md)."""


def read_dask_source(source: str, table: str, settings: Settings, what: str,
                     blocksize: str = "64MiB") -> dd.DataFrame:
    """One configured source as a Dask DataFrame: Parquet file or folder, CSV/TSV, or SQL table."""
    import dask.dataframe as dd

    if is_database_url(source):
        return _read_sql_dask(settings.url_or_path(source), table, settings, what)
    path = settings.path(source)
    if not path.exists():
        raise SourceError(f"{what}: {path} does not exist. Check data.{what} in your settings.")
    suffix = "".join(path.suffixes[-2:]).lower()
    try:
        if path.is_dir() or suffix.endswith((".parquet", ".pq")):
            return dd.read_parquet(str(path), split_row_groups="infer", blocksize=PARQUET_BLOCK)
        if suffix.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".tsv.gz")):
            compressed = suffix.endswith(".gz")
            options = text_options(path, "\t" if ".tsv" in suffix else ",", settings)  # as the local reader
            frame = dd.read_csv(str(path), **options, low_memory=False, blocksize=None if compressed else blocksize,
                                compression="gzip" if compressed else None)
            return frame.rename(columns=trimmed)
    except (ValueError, OSError) as exc:
        raise SourceError(f"{what}: {unreadable(path, exc)} (data.{what})") from exc
    raise SourceError(f"{what}: unsupported file type {path.suffix!r} for {path}; use .csv, .tsv, .parquet "
                      "or a folder of Parquet files")


def _read_sql_dask(url: str, table: str, settings: Settings, what: str) -> dd.DataFrame:
    """A database table, split into ranges of the customer id (a numeric id column is needed)."""
    import dask.dataframe as dd

    if not table.strip() or table.lstrip().lower().startswith(("select", "with")):
        raise SourceError(f"{what}: the Dask engine reads a database table by name (data.{what}_table); "
                          "for a query, create a view and name it, or export the result to Parquet")
    id_column = settings.data.columns.customer_id
    try:
        frame = dd.read_sql_table(table, url, index_col=id_column, npartitions=max(1, settings.compute.n_partitions))
    except Exception as exc:  # drivers raise many types; name the source and what to do
        raise SourceError(f"{what}: cannot read table {table!r} with the Dask engine ({exc}); it needs a numeric "
                          f"column '{id_column}' to split on, or export the table to Parquet") from exc
    return frame.reset_index()


@dataclass
class RawPartitions:
    """The configured sources as read, block by block, each row keyed with the partition of its
    customer (:func:`partition_by_customer`): partition *i* of each table holds the same customers."""

    customers: dd.DataFrame | None
    events: dd.DataFrame | None
    contacts: dd.DataFrame | None
    n_partitions: int
    text_files: frozenset[str] = frozenset()
    """The tables read from CSV/TSV, whose rows of no value at all are skipped (as locally)."""

    def present(self) -> dict[str, dd.DataFrame]:
        """The configured tables, by name."""
        frames = {"customers": self.customers, "events": self.events, "contacts": self.contacts}
        return {name: frame for name, frame in frames.items() if frame is not None}


def read_partitioned(settings: Settings, n_partitions: int | None = None) -> RawPartitions:
    """Read every configured source and key its rows by customer partition (lazy)."""
    d = settings.data
    frames = {
        name: read_dask_source(getattr(d, name), getattr(d, f"{name}_table"), settings, name) if getattr(d, name) else None
        for name in TABLES
    }
    if n_partitions is None:
        n_partitions = settings.compute.n_partitions or max(f.npartitions for f in frames.values() if f is not None)
    ids = d.columns.customer_id
    frames = ids_as_declared(frames, ids)
    parts = {name: None if f is None else partition_by_customer(f, ids, n_partitions, name) for name, f in frames.items()}
    csv = frozenset(name for name in parts if getattr(d, name) and source_kind(getattr(d, name)) == "csv")
    return RawPartitions(parts["customers"], parts["events"], parts["contacts"], n_partitions, csv)


def ids_as_declared(frames: dict[str, dd.DataFrame | None], id_column: str) -> dict[str, dd.DataFrame | None]:
    """Every table's ids as text when the local engine would compare them as text.

    ``validate_tables`` decides per call, from the tables it is given, whether ids are compared
    as numbers or as text (``compare_ids_as_text``); a partition may lack a table (no contacts
    here), so the decision is made once from the sources' dtypes and the ids are made text
    (``clean_ids``, as locally) before partitioning: every partition then decides the same.
    """
    present = {name: f for name, f in frames.items() if f is not None and id_column in f.columns}
    if not compare_ids_as_text(f[id_column].dtype for f in present.values()):
        return frames
    as_text = {name: f.assign(**{id_column: f[id_column].map_partitions(clean_ids, True, meta=(id_column, "str"))})
               for name, f in present.items()}
    return {**frames, **as_text}


# ---- per partition: validation and summaries ---------------------------------------------------


@dataclass
class Validated:
    """One partition after ``validate_tables``: its tables, or the problems that stopped them;
    the facts its values gave the global decisions, and the decisions it was validated with."""

    tables: Tables | None
    problems: list[Problem] = field(default_factory=list)
    hint: str = ""
    facts: ValueFacts = field(default_factory=ValueFacts)
    decided: Decisions | None = None
    latest_event: pd.Timestamp | None = None


def validate_partition(customers: pd.DataFrame | None, events: pd.DataFrame | None,
                       contacts: pd.DataFrame | None, settings: Settings, require_label: bool = True,
                       decided: Decisions | None = None) -> Validated:
    """``validate_tables`` on one partition's rows, put back in source order first.

    ``decided``: the decisions made from all partitions' values (``whole_decisions``); without
    them the partition decides from its own values, and says what it decided (the first pass).
    A configured table with no rows here is passed empty, not left out: events or contacts of
    customers missing from the customers table are then reported as unknown, as locally.
    """
    customers, events, contacts = (in_source_order(f) for f in (customers, events, contacts))
    if (customers is None or customers.empty) and (events is None or events.empty):
        return Validated(None)  # no customer hashed here
    facts = ValueFacts() if decided else value_facts(customers, events, contacts, settings, require_label)
    decided = decided or decide(facts)
    no_events = events is not None and events.empty
    try:
        tables = validate_tables(customers, None if no_events else events, contacts, settings,
                                 source_names(settings), require_label=require_label, kinds=source_kinds(settings),
                                 part=True, decided=decided)
    except DataValidationError as exc:
        return Validated(None, exc.problems, _hint(exc), facts, decided, exc.latest_event)
    if no_events:  # customers without any event here: an empty, validated events table
        tables.events = _no_events(tables.customers["customer_id"].dtype, settings)
    return Validated(tables, facts=facts, decided=decided, latest_event=tables.latest_event)


def whole_decisions(facts: Sequence[ValueFacts]) -> Decisions:
    """The decisions from every partition's facts: what the local engine decides on the whole
    tables. Runs on a worker, so the screened columns' samples never reach the client."""
    return decide(merge_facts(facts))


def _hint(exc: DataValidationError) -> str:
    last = str(exc).rsplit("\n", 1)[-1]
    return "" if last.startswith("  - ") else last


def _no_events(id_dtype: Any, settings: Settings) -> pd.DataFrame:
    columns = settings.data.columns
    frame = pd.DataFrame({"customer_id": pd.Series(dtype=id_dtype), "event_time": pd.Series(dtype="datetime64[ns]")})
    if columns.amount:
        frame["amount"] = pd.Series(dtype="float64")
    if columns.event_type:
        frame["event_type"] = pd.Series(dtype="category")
    return frame


@dataclass
class PartitionSummary:
    """What the global decisions need from one partition: small, and free of personal data."""

    n_customers: int = 0
    last_event_day: pd.Timestamp | None = None
    attributes: pd.DataFrame | None = None
    """Distinct attribute rows (personal and excluded columns blanked)."""
    event_type_counts: dict[str, int] = field(default_factory=dict)
    event_rows: int = 0
    has_amount: bool = False
    has_signup: bool = False
    problems: list[Problem] = field(default_factory=list)
    hint: str = ""
    dropped_rows: dict[str, int] = field(default_factory=dict)
    decided: Decisions | None = None
    notes: list[str] = field(default_factory=list)
    latest_event: pd.Timestamp | None = None


def summarize_partition(part: Validated, settings: Settings, for_schema: bool = True) -> PartitionSummary:
    """One partition's summary; ``for_schema``: with the distinct attribute rows ``infer_schema``
    needs (up to one per customer: a run with a model's schema leaves them on the worker)."""
    if part.tables is None:
        return PartitionSummary(problems=part.problems, hint=part.hint, decided=part.decided,
                                latest_event=part.latest_event)
    cu, ev = part.tables.customers, part.tables.events
    has_events = ev is not None and len(ev) > 0
    types = ev["event_type"].value_counts() if has_events and "event_type" in ev else pd.Series(dtype="int64")
    return PartitionSummary(
        n_customers=len(cu),
        last_event_day=ev["event_time"].max().normalize() if has_events else None,
        attributes=attribute_rows(cu, settings) if for_schema else None,
        event_type_counts={str(k): int(v) for k, v in types.items() if v > 0},
        event_rows=len(ev) if ev is not None else 0,
        has_amount=ev is not None and "amount" in ev,
        has_signup="signup_time" in cu,
        dropped_rows=dict(part.tables.dropped_rows),
        decided=part.decided,
        notes=list(part.tables.notes),
        latest_event=part.latest_event,
    )


def attribute_rows(customers: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """The distinct attribute rows, personal and excluded columns blanked (names never travel)."""
    blank = set(settings.pii_columns) | set(settings.features.exclude)
    attrs = customers[[c for c in customers.columns if c not in _RESERVED]]
    attrs = attrs.assign(**{c: pd.Series(pd.NA, index=attrs.index, dtype=object) for c in attrs.columns if c in blank})
    return attrs.drop_duplicates() if len(attrs.columns) else attrs.iloc[:1]


# ---- global decisions --------------------------------------------------------------------------


def raise_problems(summaries: Sequence[PartitionSummary]) -> None:
    """Every partition's validation problems in one error, as the local engine reports them."""
    problems = merge_problems([p for s in summaries for p in s.problems])
    if problems:
        hint = next((s.hint for s in summaries if s.problems and s.hint), "")
        raise DataValidationError(problems, hint=hint)
    if not any(s.n_customers for s in summaries):
        raise DataValidationError([Problem("customers and events", "*", "have no rows", [], [], 0)],
                                  hint="The source has no rows; check the path, table name or query.")


def merge_problems(problems: Sequence[Problem]) -> list[Problem]:
    """One problem per table, column and rule, as a whole-table validation reports it: counts
    added, the first offending rows (by source row number) as examples."""
    by_rule: dict[tuple[str, str, str], list[Problem]] = {}
    for p in problems:
        by_rule.setdefault((p.table, p.column, p.rule), []).append(p)
    merged = []
    for (table, column, rule), group in by_rule.items():
        group = [p for i, p in enumerate(group) if p.count or p not in group[:i]]  # a column's, said by each
        if len(group) == 1:
            merged.append(group[0])
            continue
        examples = sorted((e for p in group for e in zip(p.rows, p.values, strict=False)), key=lambda e: _row_key(e[0]))
        examples = examples[:MAX_EXAMPLES]
        merged.append(Problem(table, column, rule, [r for r, _ in examples], [v for _, v in examples],
                              sum(p.count for p in group)))
    return merged


def _row_key(row: Any) -> tuple[int, Any]:
    return (0, row) if isinstance(row, (int, np.integer)) else (1, str(row))


def global_end_date(summaries: Sequence[PartitionSummary], settings: Settings) -> pd.Timestamp:
    """The end of the data, as ``validate_tables`` decides it on the whole input."""
    if settings.data.end_date:
        return pd.Timestamp(settings.data.end_date)
    days = [s.last_event_day for s in summaries if s.last_event_day is not None]
    return max(days) if days else pd.Timestamp.today().normalize()


def schema_proxy(summaries: Sequence[PartitionSummary], settings: Settings, end_date: pd.Timestamp) -> Tables:
    """A small ``Tables`` on which ``infer_schema`` decides what it would decide on all the data.

    Its rules only see distinct attribute values, whether a column repeats a value, and the
    ranking of event types; the distinct attribute rows keep the first two (plus one repeated
    row when the full table had repeated rows), and dense-rank weights keep the ranking.
    """
    attrs = [s.attributes for s in summaries if s.attributes is not None]
    customers = pd.concat(attrs, ignore_index=True).drop_duplicates() if attrs else pd.DataFrame()
    if sum(s.n_customers for s in summaries) > len(customers) > 0:
        customers = pd.concat([customers, customers.iloc[:1]], ignore_index=True)
    if any(s.has_signup for s in summaries):
        customers["signup_time"] = pd.Series(pd.NaT, index=customers.index, dtype="datetime64[ns]")
    events = None
    if settings.data.events:
        has_amount = any(s.has_amount for s in summaries)
        events = _event_type_proxy(summaries) if any(s.event_rows for s in summaries) else pd.DataFrame()
        if has_amount:
            events["amount"] = 0.0
    contacts = pd.DataFrame() if settings.data.contacts else None
    return Tables(customers=customers.reset_index(drop=True), events=events, contacts=contacts, end_date=end_date)


def _event_type_proxy(summaries: Sequence[PartitionSummary]) -> pd.DataFrame:
    counts: Counter[str] = Counter()
    for s in summaries:
        counts.update(s.event_type_counts)
    if not counts:
        return pd.DataFrame({"event_time": [pd.NaT]})
    ranked = pd.Series(counts).sort_index()
    cutoff = ranked.nlargest(MAX_EVENT_TYPES).min()
    kept = ranked[ranked >= cutoff]
    weights = kept.rank(method="dense").astype(int)
    values = np.repeat(kept.index.to_numpy(dtype=object), weights.to_numpy())
    return pd.DataFrame({"event_type": pd.Categorical(values, categories=sorted(counts))})


@dataclass(frozen=True)
class GlobalFacts:
    schema: FeatureSchema
    end_date: pd.Timestamp
    n_customers: int
    dropped_rows: dict[str, int]
    notes: tuple[str, ...] = ()
    """What the user must hear although nothing stopped (``Tables.notes``, the same in every partition)."""


def global_facts(summaries: Sequence[PartitionSummary], settings: Settings,
                 schema: FeatureSchema | None = None, end_date: pd.Timestamp | None = None) -> GlobalFacts:
    """The decisions made once for all partitions (``schema`` given: reuse a trained model's;
    ``end_date`` given: the data end of tables cut at an as-of date, as ``cut_at`` sets it)."""
    raise_problems(summaries)
    end = global_end_date(summaries, settings) if end_date is None else end_date
    if schema is None:
        schema = infer_schema(schema_proxy(summaries, settings, end), settings)
    dropped: Counter[str] = Counter()
    for s in summaries:
        dropped.update(s.dropped_rows)
    return GlobalFacts(schema, end, sum(s.n_customers for s in summaries), dict(dropped),
                       tuple(validation_notes(summaries)))


def validation_notes(summaries: Sequence[PartitionSummary]) -> list[str]:
    """``Tables.notes`` of the whole input: every partition validated with the same decisions
    notes the same things (a column left out as personal data, ...)."""
    return next((list(s.notes) for s in summaries if s.n_customers), [])


# ---- per partition: snapshots ------------------------------------------------------------------


def partition_snapshots(part: Validated, as_of_dates: Sequence[pd.Timestamp], settings: Settings,
                        facts: GlobalFacts, with_labels: bool = True,
                        btyd_params: dict[pd.Timestamp, dict[str, float]] | None = None) -> pd.DataFrame | None:
    """``build_snapshots`` on one partition, with the global end date, schema and BG/NBD fits."""
    if part.tables is None:
        return None
    tables = dataclasses.replace(part.tables, end_date=facts.end_date)
    return build_snapshots(tables, list(as_of_dates), settings, facts.schema, with_labels=with_labels,
                           btyd_params=btyd_params)


def partition_histories(part: Validated, dates: Sequence[pd.Timestamp], settings: Settings,
                        facts: GlobalFacts) -> dict[pd.Timestamp, Histories]:
    """One partition's BG/NBD histories at each date (they add up across partitions)."""
    if part.tables is None:
        return {}
    tables = dataclasses.replace(part.tables, end_date=facts.end_date)
    return {d: btyd_histories(tables, d, settings, facts.schema) for d in dates}


def global_btyd(validated: Sequence[Delayed], as_of_dates: Sequence[pd.Timestamp], settings: Settings,
                facts: GlobalFacts) -> tuple[GlobalFacts, dict[pd.Timestamp, dict[str, float]]]:
    """BG/NBD fitted once on all partitions' histories, as the local engine fits it on all rows:
    at the day after the data end for the schema (unless it already has parameters) and at each
    as-of date before the schema's fit date (point in time). Returns the facts with the schema's
    parameters and the per-date parameters for ``partition_snapshots``."""
    import dask

    schema = facts.schema
    if not schema.btyd:
        return facts, {}
    end = (facts.end_date.normalize() + pd.Timedelta(days=1)).as_unit("ns")  # as build.snapshot_as_of
    fitted_at = pd.Timestamp(schema.btyd.get("as_of", end))
    dates = sorted({d for d in as_of_dates if d < fitted_at} | ({end} if "as_of" not in schema.btyd else set()))
    collect = dask.delayed(partition_histories, pure=True)
    per_partition = dask.compute(*[collect(v, dates, settings, facts) for v in validated])
    params = {d: fit_histories(Histories.merge([p[d] for p in per_partition if d in p])) for d in dates}
    if "as_of" not in schema.btyd:
        facts = dataclasses.replace(facts, schema=with_btyd_params(schema, end, params.pop(end)))
    return facts, params


def sorted_by_customer(frames: Sequence[pd.DataFrame | None]) -> pd.DataFrame:
    """Partitions' rows as one table ordered by as-of date, then customer (small results only)."""
    present = [f for f in frames if f is not None]
    out = pd.concat(present, ignore_index=True)
    keys = [c for c in ("as_of", "customer_id") if c in out]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def write_part(frame: pd.DataFrame | None, folder: str, number: int) -> str | None:
    """One partition's table as ``part-<number>.parquet`` in ``folder`` (written aside, then
    renamed: a worker that dies mid-write leaves no half file under the final name)."""
    if frame is None:
        return None
    target = Path(folder) / f"part-{number:05d}.parquet"
    partial = target.with_name(f".{target.name}.partial")
    frame.to_parquet(partial, index=False)
    partial.replace(target)
    return str(target)


def write_parts(parts: Sequence[Delayed], folder: Path) -> list[Path]:
    """Compute every partition's table straight to a Parquet folder, one file per partition, so
    results too large for the client never meet in one process (read back with
    ``pd.read_parquet(folder)`` or ``dd.read_parquet``). ``folder`` must be empty or new; making
    the folder's appearance atomic is the publishing step's job."""
    import dask

    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ComputeError(f"{folder} is not empty: write partitions to a new folder")
    write = dask.delayed(write_part, pure=True)
    paths = dask.compute(*[write(part, str(folder), i) for i, part in enumerate(parts)])
    return [Path(p) for p in paths if p is not None]


@contextmanager
def lines_refused_said(raw: RawPartitions, settings: Settings) -> Iterator[None]:
    """A CSV line the parser refuses in a block after the first, read on a worker: said in the
    file's terms. The parser counts that block's lines, not the file's, so the line is left to
    ``churnflow validate``, which reads the file whole and names it (the first block's refusals
    are said with their line when the source is opened: :func:`read_dask_source`)."""
    try:
        yield
    except pd.errors.ParserError as exc:
        names = source_names(settings)
        files = " or ".join(names[t] for t in sorted(raw.text_files)) or "a CSV source"
        fields = values_refused(exc)  # (its line is the block's, not the file's)
        what = (f"a line has {fields[2]} values but the header line names {fields[0]} columns" if fields
                else f"a line cannot be read ({str(exc).split('. ', 1)[-1]})")
        raise SourceError(f"{files}: {what}; a value holding the separator must be quoted (\"1,200\", \"Lee, Ann\"). "
                          "Run `churnflow validate`: it reads the file whole and names the line") from None


def validate_partitions(raw: RawPartitions, settings: Settings, require_label: bool = True,
                        store: PartitionStore | None = None, for_schema: bool = True
                        ) -> tuple[list[Delayed], tuple[PartitionSummary, ...]]:
    """Validate every partition into ``store`` (a new one by default), bring back the summaries
    (``for_schema``: with what ``infer_schema`` needs, see :func:`summarize_partition`).

    Returns, per partition, a task that reads its validated tables back (cheap: nothing is kept
    in worker memory between passes, see :class:`PartitionStore`). Uses the active
    ``distributed.Client`` when there is one (else Dask's local scheduler).
    """
    import dask

    store = store or PartitionStore.beside(settings.output_dir)
    validate = dask.delayed(validate_into, pure=True)
    summary = dask.delayed(_summary, pure=True)
    (index,) = dask.persist(keep_raw(raw, store))  # a few numbers per block: where the pieces are
    first = [validate(index, settings, require_label, None, store, i, for_schema) for i in range(raw.n_partitions)]
    facts = [dask.delayed(_facts, pure=True)(c) for c in first]
    with lines_refused_said(raw, settings):  # (the blocks are read on the workers from here)
        whole, *summaries = dask.compute(dask.delayed(whole_decisions, pure=True)(facts), *[summary(c) for c in first])
    if not all(s.decided is None or s.decided.agrees_with(whole, settings.data.dayfirst) for s in summaries):
        # Some partition decided otherwise than the whole data decide: validate again with the
        # latter (rare; the split rows are still in the store).
        summaries = dask.compute(*[summary(validate(index, settings, require_label, whole, store, i, for_schema))
                                   for i in range(raw.n_partitions)])
    forget_raw(store, index.compute())
    summaries = hint_unknown_ids(check_declared_end(tuple(summaries), settings), raw, settings)
    load = dask.delayed(load_validated, pure=True)
    return [load(store, i) for i in range(raw.n_partitions)], summaries


def keep_raw(raw: RawPartitions, store: PartitionStore) -> Delayed:
    """Every table's rows moved to their customers' partitions in ``store``: a shuffle by
    customer done by hand, whose memory does not grow with the data.

    Each input block is split by partition and written as one file of pieces, one per partition
    (:func:`split_block`); partition *i* is then the *i*-th piece of every block of a table
    (:func:`raw_partition`). A task holds one block or one partition, never more. Dask's own
    shuffle held memory outside its accounting that grew with the data (+53 % per worker from
    1M to 8M customers; split by hand, +3 %: benchmarks/README.md); here the rows of a partition
    also come back in source order by construction. Returns where the pieces are (a
    :class:`RawIndex`, a few numbers per block).
    """
    import dask

    split = dask.delayed(split_block, pure=False)  # a side effect: files in this run's store
    blocks = {table: [split(block, store, table, b, raw.n_partitions, table in raw.text_files)
                      for b, block in enumerate(frame.to_delayed())]
              for table, frame in raw.present().items()}
    empty = {table: frame._meta.drop(columns=PARTITION) for table, frame in raw.present().items()}
    return dask.delayed(raw_index, pure=True)(blocks, empty)


@dataclass(frozen=True)
class SplitBlock:
    """Where :func:`split_block` put one input block's pieces: piece *i* (partition *i*) starts at
    ``starts[i]`` of its file, which ends at ``starts[-1]``; ``rows``: the rows the block read."""

    starts: np.ndarray
    rows: int


@dataclass(frozen=True)
class RawIndex:
    """Where each partition's rows are in the store after :func:`keep_raw`: per table, its input
    blocks (:class:`SplitBlock`); ``empty``: each table with no rows (its columns and dtypes), for
    a partition with none of its rows."""

    blocks: dict[str, list[SplitBlock]]
    empty: dict[str, pd.DataFrame]

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(t for t in TABLES if t in self.blocks)

    def source_rows(self, table: str, rows: np.ndarray) -> np.ndarray:
        """``_row`` values as keyed (block, row within it) → row numbers in the source."""
        first = np.r_[0, np.cumsum([b.rows for b in self.blocks[table]])].astype(np.int64)
        return first[rows >> BLOCK_BITS] + (rows & ((1 << BLOCK_BITS) - 1))


def raw_index(blocks: dict[str, list[SplitBlock]], empty: dict[str, pd.DataFrame]) -> RawIndex:
    """The :class:`RawIndex` of the split tasks' answers (a task of its own: one key that every
    validation task reads, instead of every split task's)."""
    return RawIndex(blocks, empty)


def split_block(block: pd.DataFrame, store: PartitionStore, table: str, number: int, n_partitions: int,
                skip_blank: bool = False) -> SplitBlock:
    """One keyed input block (:func:`partition_by_customer`) as a file of ``n_partitions`` pieces in
    ``store``, piece *i* holding the block's rows of partition *i* in their order. ``skip_blank``:
    rows of no value at all are left out (counted, so the rows after them keep their file line)."""
    rows_read = len(block)
    if skip_blank:
        block = block.loc[skip_blank_rows(block.drop(columns=[ROW, PARTITION])).index]
    keys = block[PARTITION].to_numpy()
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_partitions + 1))
    rows = block.drop(columns=PARTITION)
    pieces = [rows.take(order[bounds[i]:bounds[i + 1]]) if bounds[i] < bounds[i + 1] else None
              for i in range(n_partitions)]
    return SplitBlock(store.put_pieces(f"raw-{table}", number, pieces), rows_read)


def raw_partition(store: PartitionStore, index: RawIndex, number: int) -> list[pd.DataFrame | None]:
    """Partition ``number``'s rows of the customers, events and contacts (None: not configured;
    empty: no rows here), read from every block in block order (source order), numbered as
    in the source."""
    from dask.dataframe.dispatch import concat  # Dask's: unites the blocks' categories

    frames: list[pd.DataFrame | None] = []
    for table in TABLES:
        if table not in index.blocks:
            frames.append(None)
            continue
        pieces = [store.get_piece(f"raw-{table}", b, block.starts, number) for b, block in enumerate(index.blocks[table])]
        pieces = [p for p in pieces if p is not None]
        if not pieces:
            frames.append(index.empty[table])
            continue
        frame = concat(pieces, ignore_index=True)
        frame[ROW] = index.source_rows(table, frame[ROW].to_numpy())
        frames.append(frame)
    return frames


def forget_raw(store: PartitionStore, index: RawIndex) -> None:
    """Remove the split blocks (every partition is validated: the disk holds the data once)."""
    for table, blocks in index.blocks.items():
        for b in range(len(blocks)):
            store.remove(f"raw-{table}", b)


@dataclass(frozen=True)
class Checkpoint:
    """What one validation task returns: its partition's facts (they stay on the workers: the
    personal-data screen's sample) and summary; the tables went to the store."""

    facts: ValueFacts
    summary: PartitionSummary


def validate_into(index: RawIndex, settings: Settings, require_label: bool, decided: Decisions | None,
                  store: PartitionStore, number: int, for_schema: bool = True) -> Checkpoint:
    """:func:`validate_partition` on partition ``number``'s rows in ``store`` (:func:`keep_raw`),
    its result kept there as the partition's validated tables."""
    part = validate_partition(*raw_partition(store, index, number), settings, require_label, decided)
    store.put(VALIDATED, number, dataclasses.replace(part, facts=ValueFacts()))
    return Checkpoint(part.facts, summarize_partition(part, settings, for_schema))


def load_validated(store: PartitionStore, number: int) -> Validated:
    """Partition ``number`` as :func:`validate_into` kept it."""
    return store.get(VALIDATED, number)


def _facts(checkpoint: Checkpoint) -> ValueFacts:
    return checkpoint.facts


def _summary(checkpoint: Checkpoint) -> PartitionSummary:
    return checkpoint.summary


def check_declared_end(summaries: tuple[PartitionSummary, ...], settings: Settings) -> tuple[PartitionSummary, ...]:
    """``data.end_date`` checked against the latest event of all partitions (each partition's own
    latest may lie long before it without the data's doing so), the problem added once."""
    times = [s.latest_event for s in summaries if s.latest_event is not None and not pd.isna(s.latest_event)]
    problem = declared_end_problem(max(times), settings, source_names(settings)["events"],
                                   settings.data.columns.event_time) if times else None
    if problem is None:
        return summaries
    first, *rest = summaries
    return (dataclasses.replace(first, problems=[*first.problems, problem]), *rest)


def hint_unknown_ids(summaries: tuple[PartitionSummary, ...], raw: RawPartitions, settings: Settings
                     ) -> tuple[PartitionSummary, ...]:
    """The partitions' problems, merged, with the local engine's hint for unknown ids that match a
    customer once leading zeros are ignored ('007' and 7 are hashed to different partitions, so no
    partition sees both): the customers' ids that match are looked up in every partition."""
    import dask

    problems = merge_problems([p for s in summaries for p in s.problems])
    wanted = unknown_id_values(problems)
    if not wanted:
        return summaries
    frames = raw.customers if raw.customers is not None else raw.events
    assert frames is not None
    lookup = dask.delayed(_ids_like, pure=True)  # the customers read again: only when ids are unknown
    found = dask.compute(*[lookup(f, settings.data.columns.customer_id, wanted) for f in frames.to_delayed()])
    ids = pd.concat(found).sort_index(kind="stable")  # in source order, as the local engine meets them
    hint = next((s.hint for s in summaries if s.problems and s.hint), "")
    first, *rest = summaries  # the merged problems said once
    return (dataclasses.replace(first, problems=id_hint(problems, ids), hint=hint),
            *[dataclasses.replace(s, problems=[]) for s in rest])


def _ids_like(frame: pd.DataFrame, id_column: str, wanted: set[str]) -> pd.Series:
    """The ids of one partition that :func:`id_hint` would match to ``wanted``, by source row."""
    ids = clean_ids(in_source_order(frame)[id_column]).dropna()
    return ids[loose_ids(ids).isin(wanted).to_numpy()]


def build_snapshots_partitioned(raw: RawPartitions, as_of_dates: Sequence[pd.Timestamp], settings: Settings,
                                with_labels: bool = True, schema: FeatureSchema | None = None
                                ) -> tuple[list[Delayed], GlobalFacts]:
    """Validate every partition, decide the global facts, then build each partition's snapshots.

    Returns one delayed feature table per partition (:func:`write_parts` writes them to a
    Parquet folder, :func:`sorted_by_customer` collects small ones) and the global facts.
    """
    import dask

    validated, summaries = validate_partitions(raw, settings, require_label=with_labels, for_schema=schema is None)
    facts = global_facts(summaries, settings, schema)
    as_of = [pd.Timestamp(t).normalize().as_unit("ns") for t in as_of_dates]
    facts, btyd_params = global_btyd(validated, as_of, settings, facts)
    build = dask.delayed(partition_snapshots, pure=True)
    return [build(v, as_of, settings, facts, with_labels, btyd_params) for v in validated], facts


def cut_partition(part: Validated, end_date: pd.Timestamp, day: pd.Timestamp) -> Tables | None:
    """One partition's tables as ``cut_at(tables, day)`` leaves the whole input's (``end_date``:
    the whole input's data end)."""
    return None if part.tables is None else cut_at(dataclasses.replace(part.tables, end_date=end_date), day)


def _cut_validated(part: Validated, end_date: pd.Timestamp, day: pd.Timestamp) -> Validated:
    return Validated(cut_partition(part, end_date, day))


def build_features_partitioned(raw: RawPartitions, settings: Settings, as_of: pd.Timestamp | None = None
                               ) -> tuple[list[Delayed], GlobalFacts, pd.Timestamp]:
    """The ``build-features`` table on partitions: the tables cut at ``as_of`` when given (as
    ``load_tables(settings, as_of)``), the schema inferred on them, features at ``as_of`` (default:
    the day after the data end). Returns one delayed table per partition, the facts and the date."""
    import dask

    validated, summaries = validate_partitions(raw, settings, for_schema=as_of is None)  # else inferred on the cut
    end = None
    if as_of is not None:
        raise_problems(summaries)
        as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
        whole_end = global_end_date(summaries, settings)
        check_as_of(Tables(pd.DataFrame(), None, None, whole_end), as_of)  # as the local features flow
        end = min(whole_end, as_of - pd.Timedelta(days=1))
        cut = dask.delayed(_cut_validated, pure=True)
        validated = [cut(v, end, as_of) for v in validated]  # each pass reads and cuts its partition again
        summarize = dask.delayed(summarize_partition, pure=True)
        summaries = dask.compute(*[summarize(v, settings) for v in validated])
    facts = global_facts(summaries, settings, end_date=end)
    day = as_of if as_of is not None else latest_as_of(Tables(pd.DataFrame(), None, None, facts.end_date))
    facts, btyd_params = global_btyd(validated, [day], settings, facts)
    build = dask.delayed(partition_snapshots, pure=True)
    return [build(v, [day], settings, facts, False, btyd_params) for v in validated], facts, day
