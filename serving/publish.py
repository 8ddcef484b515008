"""Publishing one week's outputs as one unit: all sinks change together, or none does.

People and downstream jobs read ``outputs/<as-of>/`` (and the optional list table) while the next
run may be writing, and a run can die halfway (disk full, killed container, database down). So
:func:`publish_week` works in three steps:

1. every file is written into a hidden sibling folder ``.<as-of>.tmp-<pid>`` and flushed to disk;
2. the database transaction is opened and this week's rows replace the rows of that date;
3. the folder is swapped into place (atomically with Linux ``renameat2(RENAME_EXCHANGE)``,
   otherwise old folder renamed aside, new one renamed in), then the transaction commits.

A failing writer or row write drops the temporary folder and rolls back: nothing that was
published before changes. A failing commit swaps the previous folder back. Readers therefore see
either last run's complete folder and rows or this run's, never a mix, and a retry of the whole
step (the flow's job) starts from a clean state.

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
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churnflow.features.io import ensure_sqlite_folder, fsync_file, pid_alive, write_json
from churnflow.serving.priority import STATUS_HOLDOUT, team_list

if TYPE_CHECKING:
    import sqlalchemy as sa

Writer = Callable[[Path], None]
"""Writes one output file at the given path."""

CSV_ENCODING = "utf-8-sig"
CSV_FLOAT_FORMAT = "%.10g"
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CARRIED = ("outcome.json",)
"""Files a rerun of a date keeps from the published folder: written once, later, by another step
(``serving.outcomes.write_outcome_once``), and never rewritten by publishing the list again."""


# ---- writers ----------------------------------------------------------------------
ROW_GROUP_ROWS = 1024 * 1024
"""Rows per Parquet row group (pyarrow's default, stated so a file written in pieces by
:func:`write_parquet_stream` has the same row groups, hence the same bytes)."""
_PARQUET = {"compression": "snappy", "write_statistics": True}


def write_parquet(frame: pd.DataFrame, path: Path, row_group_rows: int | None = None) -> None:
    """Parquet via pyarrow, without the index, deterministic bytes for the same frame."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    pq.write_table(table, path, row_group_size=row_group_rows or ROW_GROUP_ROWS, **_PARQUET)


def write_parquet_stream(tables: Iterable[pa.Table], path: Path, schema: pa.Schema) -> int:
    """One Parquet file from consecutive Arrow tables, holding at most one row group at a time.

    The bytes are :func:`write_parquet`'s for the whole table (same schema, metadata and row
    groups): rows are regrouped into row groups of exactly :data:`ROW_GROUP_ROWS`, each written
    as one contiguous chunk. Returns the number of rows written.
    """
    pending: list[pa.Table] = []
    n_pending = n_written = 0
    with pq.ParquetWriter(path, schema, **_PARQUET) as writer:
        for table in tables:
            pending.append(table.cast(schema))
            n_pending += table.num_rows
            while n_pending >= ROW_GROUP_ROWS:
                whole = pa.concat_tables(pending)
                writer.write_table(whole.slice(0, ROW_GROUP_ROWS).combine_chunks(), row_group_size=ROW_GROUP_ROWS)
                pending, n_pending = [whole.slice(ROW_GROUP_ROWS)], n_pending - ROW_GROUP_ROWS
                n_written += ROW_GROUP_ROWS
        if n_pending or not n_written:
            rest = pa.concat_tables(pending) if pending else schema.empty_table()
            writer.write_table(rest.combine_chunks(), row_group_size=ROW_GROUP_ROWS)
            n_written += n_pending
    return n_written


@dataclass(frozen=True)
class ScoresFile:
    """``scores.parquet`` already written, in a hidden working folder beside the dated folders.

    The Dask engine assembles it there from the partitions' pieces (the table never meets in one
    process); publishing links it into the staged folder, so the folder still appears as one
    unit. :meth:`discard` removes the working folder once the week is published (or has failed).
    """

    path: Path
    n_rows: int

    def __len__(self) -> int:
        return self.n_rows

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.path, columns=columns)

    def discard(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def scores_workspace(output_root: Path, as_of: date | datetime | pd.Timestamp) -> Path:
    """A fresh hidden folder ``.<as-of>.scores-<host>-<pid>`` beside the dated folders, for the pieces and
    the assembled ``scores.parquet`` (same file system: publishing links, not copies; leftovers of
    a killed run are removed by the next run of that date, like its staging folder)."""
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    day = pd.Timestamp(as_of).date().isoformat()
    _remove_stale(root, day)
    folder = _sibling(root, day, f"scores-{socket.gethostname()}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def write_piece(frame: pd.DataFrame, folder: Path, number: int, n_pieces: int = 1) -> Path:
    """One partition's rows as ``part-<number>.parquet`` (written aside, then renamed: a worker that
    dies mid-write leaves no half piece under the final name; a re-run task overwrites it).

    Row groups of ``MERGE_ROWS / n_pieces`` rows: a Parquet reader decodes a whole row group, and
    :func:`merged_by_key` reads all pieces at once, so bigger groups would hold the whole table."""
    target = Path(folder) / f"part-{number:05d}.parquet"
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    write_parquet(frame, partial, row_group_rows=_merge_batch_rows(n_pieces))
    partial.replace(target)
    return target


MERGE_ROWS = 256 * 1024
"""Rows read ahead from all pieces together while merging them (split evenly between pieces)."""


def _merge_batch_rows(n_pieces: int) -> int:
    return max(1, MERGE_ROWS // max(n_pieces, 1))


def merged_by_key(pieces: Sequence[Path], key: str, schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of Parquet pieces, each sorted by ``key`` and no key in two pieces (customers
    partitioned by id), in global ``key`` order, a slice at a time.

    A k-way merge on batches: every row up to the smallest of the pieces' last held keys is
    final (later rows of every piece come after it), so it is emitted, and every piece then reads
    on until it holds a batch again. Topping up every piece, not only the one that ran out, makes
    each round emit about a batch of every piece: the rounds grow with the rows, not with rows ×
    pieces (8M customers in 128 pieces took 31 s to merge, 4M in 64 pieces 7 s). At most twice
    :data:`MERGE_ROWS` rows are held, however many rows the pieces have.
    """
    batch_rows = _merge_batch_rows(len(pieces))
    streams = [pq.ParquetFile(p).iter_batches(batch_size=batch_rows) for p in pieces]

    def topped_up(i: int, held: pa.Table) -> pa.Table:
        """Piece ``i``'s held rows, read on until a batch is held (or the piece is read)."""
        while held.num_rows < batch_rows:
            batch = next(streams[i], None)
            if batch is None:
                break
            held = pa.concat_tables([held, pa.Table.from_batches([batch]).cast(schema)])
        return held

    held = [topped_up(i, schema.empty_table()) for i in range(len(streams))]
    while live := [i for i, t in enumerate(held) if t.num_rows]:
        bound = min(held[i][key][-1].as_py() for i in live)
        ready = []
        for i in live:
            n = pc.sum(pc.less_equal(held[i][key], bound)).as_py() or 0
            ready.append(held[i].slice(0, n))
            held[i] = topped_up(i, held[i].slice(n))
        rows = pa.concat_tables(ready)
        yield rows.take(pc.sort_indices(rows, [(key, "ascending")]))


def link_file(source: Path, target: Path) -> None:
    """``target`` as a hard link of ``source`` (a copy across file systems)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """UTF-8 with BOM, ``\\n`` line ends, ISO dates, ``%.10g`` floats, empty string for missing."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col].dtype):
            t = out[col]
            dated_only = bool((t.dropna() == t.dropna().dt.normalize()).all())
            out[col] = t.dt.strftime("%Y-%m-%d" if dated_only else "%Y-%m-%dT%H:%M:%S")
    out.to_csv(path, index=False, encoding=CSV_ENCODING, float_format=CSV_FLOAT_FORMAT, lineterminator="\n", date_format="%Y-%m-%d")


def write_text(text: str, path: Path) -> None:
    path.write_bytes(text.encode("utf-8"))


def standard_writers(
    scores: pd.DataFrame | ScoresFile, priority_list: pd.DataFrame, summary: Mapping[str, Any], report_html: str
) -> dict[str, Writer]:
    """The five files of a weekly output folder (DESIGN.md, "Outputs").

    ``priority_list.parquet`` is the whole list (control group included: the record);
    ``priority_list.csv``, the file the team works from, leaves the control group out
    (:func:`serving.priority.team_list`). ``scores`` already written (:class:`ScoresFile`) is linked.
    """
    return {
        "scores.parquet": (lambda p: link_file(scores.path, p)) if isinstance(scores, ScoresFile)
        else lambda p: write_parquet(scores, p),
        "priority_list.csv": lambda p: write_csv(team_list(priority_list), p),
        "priority_list.parquet": lambda p: write_parquet(priority_list, p),
        "summary.json": lambda p: write_json(p, summary),
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


def _remove_stale(root: Path, day: str) -> None:
    """Delete leftovers of crashed runs for this date (their process is gone). A scores working
    folder names its host too: it may be a cluster worker's, whose process id means nothing here."""
    here = socket.gethostname()
    for path in root.glob(f".{day}.*-*"):
        m = re.search(r"\.(?:tmp|old|undo|scores-(?P<host>.+))-(?P<pid>\d+)$", path.name)
        if not m or m["host"] not in (None, here):
            continue
        if int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ListTable:
    """The database sink of a week: ``rows`` replace the rows of the as-of date in ``table``.

    ``url`` is an SQLAlchemy URL (the table is created on first use, with the list's columns plus
    ``as_of`` as a date; a ``sqlite:///`` file's folder is created too).
    """

    url: str
    table: str
    rows: pd.DataFrame


def publish_week(
    output_root: Path,
    as_of: date | datetime | pd.Timestamp,
    files: Mapping[str, Writer],
    database: ListTable | None = None,
    *,
    use_exchange: bool = True,
) -> Path:
    """Publish ``files`` (name -> writer) to ``output_root/<as-of>/`` and ``database``, as one unit.

    Returns the published folder. On any error (a writer, the rows, the commit) the previous
    folder and rows of that date are left exactly as they were, no temporary folder remains, and
    the error is re-raised (see the module docstring for the order of the steps).
    ``use_exchange=False`` forces the portable rename-aside path (used by the tests).
    """
    root = Path(output_root)
    root.mkdir(parents=True, exist_ok=True)
    day = pd.Timestamp(as_of).date()
    final = root / day.isoformat()
    _remove_stale(root, day.isoformat())
    staged = _stage_folder(root, day.isoformat(), files)
    try:
        _carry_over(final, staged)
        with _rows_replaced(database, day) as commit:
            aside = _swap_in(staged, final, use_exchange)
            try:
                commit()
            except BaseException:
                _swap_back(final, aside, use_exchange)
                raise
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(root)
    return final


publish_outputs = publish_week
"""The former name of :func:`publish_week` (files only, when no ``database`` is given)."""


def _sibling(root: Path, day: str, kind: str) -> Path:
    """The hidden working folder ``.<day>.<kind>-<pid>`` beside the dated folder."""
    return root / f".{day}.{kind}-{os.getpid()}"


def _stage_folder(root: Path, day: str, files: Mapping[str, Writer]) -> Path:
    """Write every file into a fresh hidden folder and flush it; on error nothing is left."""
    staged = _sibling(root, day, "tmp")
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir()
    try:
        for name in sorted(files):
            if Path(name).name != name or name.startswith("."):
                raise ValueError(f"output file name must be a plain file name, got {name!r}")
            files[name](staged / name)
            fsync_file(staged / name)
        _fsync_dir(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _carry_over(final: Path, staged: Path) -> None:
    """Hard-link (or copy) the :data:`CARRIED` files of the published folder into the staged one.

    A staged file of the same name is replaced by the published one: an outcome card records what
    was known when the horizon closed, and a rerun of the list must not lose or rewrite it.
    """
    for name in CARRIED:
        source, target = final / name, staged / name
        if not source.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
            fsync_file(target)


def _swap_in(staged: Path, final: Path, use_exchange: bool) -> Path | None:
    """Put ``staged`` at ``final``; return where the previous folder now is (None: there was none)."""
    if not final.exists():
        os.rename(staged, final)
        return None
    if use_exchange and _exchange(staged, final):
        return staged
    old = _sibling(final.parent, final.name, "old")
    os.rename(final, old)
    try:
        os.rename(staged, final)
    except BaseException:
        os.rename(old, final)
        raise
    return old


def _swap_back(final: Path, aside: Path | None, use_exchange: bool) -> None:
    """Undo :func:`_swap_in`: the previous folder (if any) back at ``final``, this run's removed."""
    if aside is not None and use_exchange and _exchange(aside, final):
        shutil.rmtree(aside, ignore_errors=True)
        return
    undone = _sibling(final.parent, final.name, "undo")
    os.rename(final, undone)
    if aside is not None:
        os.rename(aside, final)
    shutil.rmtree(undone, ignore_errors=True)

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


def read_holdouts(output_root: Path, as_of: date | datetime | pd.Timestamp) -> dict[str, list[object]]:
    """Control-group customer ids of every published list strictly before ``as_of``, by as-of date.

    For ``serving.weekly.score_week(earlier_holdouts=...)``: a customer held back by a list whose
    horizon is still open must not be contacted by a later list.
    """
    day = pd.Timestamp(as_of).date().isoformat()
    out: dict[str, list[object]] = {}
    for folder in published_folders(output_root):
        path = folder / "priority_list.parquet"
        if folder.name >= day or not path.exists():
            continue
        listed = pd.read_parquet(path, columns=["customer_id", "status"])
        out[folder.name] = listed.loc[listed["status"].eq(STATUS_HOLDOUT).to_numpy(), "customer_id"].tolist()
    return out


# ---- the database sink ----------------------------------------------------------------------
@contextlib.contextmanager
def _rows_replaced(sink: ListTable | None, day: date) -> Iterator[Callable[[], None]]:
    """Replace the rows of ``day`` inside an open transaction and yield its ``commit``.

    Leaving the block without calling it rolls the transaction back.
    """
    if sink is None:
        yield lambda: None
        return
    engine = _engine(sink.url)
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                _replace_rows(conn, sink.table, sink.rows, day)
                yield transaction.commit
            finally:
                if transaction.is_active:
                    transaction.rollback()
    finally:
        engine.dispose()


def _engine(url: str) -> sa.Engine:
    """An engine whose transactions cover DDL too (Python's sqlite3 would auto-commit a CREATE)."""
    import sqlalchemy as sa

    ensure_sqlite_folder(url)
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":  # SQLAlchemy's recipe for SQLite transactional DDL

        @sa.event.listens_for(engine, "connect")
        def _driver_leaves_transactions_to_us(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


def _replace_rows(conn: sa.Connection, table: str, rows: pd.DataFrame, day: date) -> int:
    """Delete the rows of ``day`` and insert ``rows`` with an ``as_of`` column (creates the table)."""
    import sqlalchemy as sa

    frame = rows.copy()
    frame.insert(0, "as_of", day)
    if sa.inspect(conn).has_table(table):
        tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
        conn.execute(sa.delete(tbl).where(tbl.c.as_of == day))
    frame.to_sql(table, conn, if_exists="append", index=False, dtype={"as_of": sa.Date()})
    return len(frame)


def write_list_to_database(
    priority_list: pd.DataFrame, url: str, table: str, as_of: date | datetime | pd.Timestamp
) -> int:
    """Replace the rows of ``as_of`` in ``table`` with this list, in one transaction.

    For the rows alone; a weekly run publishes folder and rows together with :func:`publish_week`.
    Returns the number of rows inserted.
    """
    with _rows_replaced(ListTable(url, table, priority_list), pd.Timestamp(as_of).date()) as commit:
        commit()
    return len(priority_list)
