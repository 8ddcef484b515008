"""Weekly scoring on customer partitions (the Dask engine), and its capacity cut.

Each partition is scored with the local engine's ``score_partition``; the drift bin counts add
up across partitions, and the capacity cut is a top-k per partition, then one global merge.

Scores computed partition by partition (Dask, chunks) never need to meet in one table to cut
the weekly list: each partition keeps only the rows that could make it (its own ranked prefix,
up to its ``capacity``-th contactable customer), and the list built from the merged candidates
is the list built from all scores. Why this is exact: a customer on the global list has fewer
than ``capacity`` contactable customers ranked above it overall, hence also within its own
partition; and the first ``capacity`` contactable customers overall all survive, so nobody
below them can slip onto the list.

The score rows themselves never reach the client: each scoring task keeps its partition's rows
in the run's ``PartitionStore`` (on disk: worker memory holds one partition at a time, however
large the data). Once the list is known, each partition writes its
rows of ``scores.parquet`` as a piece, and the client merges the pieces in customer order a slice
at a time into the local engine's file, byte for byte (:func:`scores_on_workers`). Report cards
of past lists are answered the same way: each partition judges the listed customers whose rows it
holds (:class:`PartitionedOutcomes`).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnflow.features.btyd import Histories, fit_histories
from churnflow.features.build import btyd_histories, with_btyd_params
from churnflow.features.contracts import Tables, check_as_of, source_names
from churnflow.features.labels import Definition, active_customers
from churnflow.features.partitioned import (
    PartitionStore,
    RawPartitions,
    Validated,
    customer_partition,
    cut_partition,
    global_end_date,
    raise_problems,
    sorted_by_customer,
    validate_partitions,
    validation_notes,
    worker_loss_as_error,
)
from churnflow.features.profile import combine_counts, psi_from_counts
from churnflow.features.schema import FeatureSchema
from churnflow.features.settings import Settings
from churnflow.serving.outcomes import Outcomes, realised
from churnflow.serving.priority import Population, rank_order, recently_contacted, within_capacity
from churnflow.serving.publish import (
    ScoresFile,
    merged_by_key,
    scores_workspace,
    write_parquet_stream,
    write_piece,
)
from churnflow.serving.score import (
    ScoreResult,
    no_active_customers,
    partition_tables,
    score_partition,
    scores_table,
    without_flagged_churners,
)
from churnflow.serving.weekly import (
    ScoresRecord,
    TextCount,
    WeeklyOutputs,
    check_model_inputs,
    numbers_with_text,
    scoring_date,
    text_in_numeric_inputs,
    week_outputs,
    with_status,
)
from churnflow.training.bundle import ModelBundle

SCORED = "scored"
"""The :class:`PartitionStore` kind of a partition's score rows (``PartitionScores``)."""

if TYPE_CHECKING:
    from dask.delayed import Delayed


def partition_candidates(scored: pd.DataFrame, settings: Settings, contacts: pd.DataFrame | None = None,
                         as_of: date | datetime | pd.Timestamp | None = None) -> pd.DataFrame:
    """The rows of one partition's scores that can make the list, in priority order.

    The same steps as ``build_priority_list`` up to the cut: minimum probability, ranking,
    suppression of recent contacts (they are kept but use no capacity), capacity.
    """
    cfg = settings.serving
    if as_of is None and "as_of" in scored.columns and len(scored):
        as_of = pd.Timestamp(scored["as_of"].iloc[0])
    eligible = scored[scored["churn_probability"].to_numpy(np.float64) >= cfg.min_probability]
    ranked = rank_order(eligible)
    recent = recently_contacted(ranked["customer_id"], contacts, as_of, cfg.cooldown_days)
    return ranked[within_capacity(~recent, cfg.capacity)]


def merge_candidates(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """All partitions' candidates in global priority order (feed to ``build_priority_list``)."""
    parts = [p for p in parts if p is not None]
    frames = [p for p in parts if len(p)] or parts[:1]
    if not frames:
        return pd.DataFrame(columns=["customer_id", "churn_probability", "value_at_risk"])
    return rank_order(pd.concat(frames, ignore_index=True)).reset_index(drop=True)


# ---- weekly scoring, one partition at a time ----------------------------------------------------


@dataclass
class PartitionScores:
    """One partition's score rows, drift bin counts and list candidates."""

    rows: pd.DataFrame | None = None
    counts: dict[str, list[int]] = field(default_factory=dict)
    candidates: pd.DataFrame | None = None
    n_rows: int = 0


def score_table_partition(tables: Tables | None, as_of: pd.Timestamp, bundle: ModelBundle,
                          settings: Settings) -> PartitionScores:
    """``score_partition`` on one partition's active customers, plus its list candidates."""
    if tables is None:
        return PartitionScores()
    as_of = pd.Timestamp(as_of).normalize().as_unit("ns")
    ids = active_customers(tables, as_of, settings.churn.min_tenure_days,
                           require_history=settings.churn.definition != "label" or bundle.schema.has_events)
    ids = without_flagged_churners(tables, ids, settings)
    if not len(ids):
        return PartitionScores()
    ids = pd.Index(np.sort(np.asarray(ids)))  # the order the local engine scores in
    rows, counts = score_partition(tables, ids, as_of, bundle, settings)
    return PartitionScores(rows, counts, partition_candidates(rows, settings, tables.contacts, as_of), len(rows))


def rows_that_matter(part: PartitionScores, previous_ids: pd.Index) -> PartitionScores:
    """What of one partition's scores the client needs: the drift counts, the candidates, and the
    rows of the candidates and of last week's listed customers (their probability says why they
    dropped off); all rows wait in the ``PartitionStore`` until the scores table is written."""
    if part.rows is None:
        return part
    ids = part.rows["customer_id"]
    keep = ids.isin(part.candidates["customer_id"]) | ids.isin(previous_ids)
    return replace(part, rows=part.rows.loc[keep.to_numpy()])


def write_scores_piece(part: PartitionScores, listed: pd.DataFrame, model_version: str, folder: str,
                       number: int, n_pieces: int) -> str | None:
    """One partition's rows of ``scores.parquet`` (the local engine's ``scores_table`` and
    ``with_status``), written as a piece by its worker; the client merges the pieces."""
    if part.rows is None or not len(part.rows):
        return None
    scores = with_status(scores_table(part.rows, model_version), listed)
    return str(write_piece(scores, Path(folder), number, n_pieces))


def assemble_scores(pieces: Sequence[Path], target: Path) -> tuple[ScoresFile, Population]:
    """The pieces merged into one ``scores.parquet`` in customer order, as the local engine
    writes it, slice by slice; and the population the summary needs, gathered on the way."""
    schema = pq.read_schema(pieces[0])
    populations: list[Population] = []

    def slices() -> Iterator[pa.Table]:
        for table in merged_by_key(pieces, "customer_id", schema):
            populations.append(Population.of(table.select(["churn_probability", "status", "risk_tier"]).to_pandas()))
            yield table

    n_rows = write_parquet_stream(slices(), target, schema)
    return ScoresFile(target, n_rows), Population.concat(populations)


def scores_on_workers(parts: Sequence[Delayed], day: pd.Timestamp, model_version: str,
                      settings: Settings) -> ScoresRecord:
    """``week_outputs``' record on the Dask engine: once the list is known, each worker writes its
    partition's rows to a piece in a hidden working folder beside the dated folders (the output
    folder must be on storage the workers share with the client), and the client merges them.
    The working folder is removed when anything fails; publishing links the file from it."""
    import dask

    def record(priority_list: pd.DataFrame) -> tuple[ScoresFile, Population]:
        folder = scores_workspace(settings.output_dir, day)
        try:
            listed = dask.delayed(priority_list[["customer_id", "status"]], pure=True)
            write = dask.delayed(write_scores_piece, pure=True)
            pieces = dask.compute(*[write(part, listed, str(model_version), str(folder), i, len(parts))
                                    for i, part in enumerate(parts)])
            pieces = [Path(p) for p in pieces if p]
            assembled = assemble_scores(pieces, folder / "scores.parquet")
            for piece in pieces:  # merged: the disk holds the table once, not twice
                piece.unlink()
            return assembled
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    return record


def _histories(tables: Tables | None, day: pd.Timestamp, settings: Settings, schema: FeatureSchema) -> Histories:
    return Histories.merge([]) if tables is None else btyd_histories(tables, day, settings, schema)


def bundle_for_date_partitioned(bundle: ModelBundle, cut: Sequence[Delayed], day: pd.Timestamp,
                                settings: Settings) -> ModelBundle:
    """``serving.weekly.bundle_for_date`` on partitions: re-scoring a week before the model's
    BG/NBD fit date fits the parameters once on every partition's histories (they add up)."""
    import dask

    fitted_at = bundle.schema.btyd.get("as_of") if bundle.schema.btyd else None
    if fitted_at is None or day >= pd.Timestamp(fitted_at):
        return bundle
    collect = dask.delayed(_histories, pure=True)
    histories = dask.compute(*[collect(t, day, settings, bundle.schema) for t in cut])
    return replace(bundle, schema=with_btyd_params(bundle.schema, day, fit_histories(Histories.merge(histories))))


def score_into(tables: Tables | None, day: pd.Timestamp, bundle: ModelBundle, settings: Settings,
               text_counts: dict[str, TextCount], previous_ids: pd.Index, store: PartitionStore,
               number: int) -> PartitionScores:
    """One partition checked (``check_model_inputs``, its "mostly not numbers" rule counted on all
    partitions) and scored; every score row kept in ``store`` for the scores table, the rows that
    matter to the list returned (``rows_that_matter``)."""
    if tables is not None:
        check_model_inputs(tables, bundle.schema, settings, text_counts)
    part = score_table_partition(tables, day, bundle, settings)
    store.put(SCORED, number, part)
    return rows_that_matter(part, previous_ids)


def load_scored(store: PartitionStore, number: int) -> PartitionScores:
    """Partition ``number``'s scores as :func:`score_into` kept them."""
    return store.get(SCORED, number)


def score_partitions(cut: Sequence[Delayed], day: pd.Timestamp, bundle: ModelBundle, settings: Settings,
                     end_date: pd.Timestamp, previous_ids: pd.Index, text_counts: dict[str, TextCount],
                     store: PartitionStore) -> tuple[ScoreResult, pd.DataFrame, list[Delayed]]:
    """Every partition checked and scored on the workers, its score rows kept in ``store``: the
    rows that matter to the list (ordered by customer as the local engine's), the merged drift,
    the ranked candidates for this week's list, and a task per partition reading its scores back."""
    import dask

    model = dask.delayed(bundle, pure=True)  # shipped once, not once per partition
    score = dask.delayed(score_into, pure=True)
    parts = dask.compute(*[score(t, day, model, settings, text_counts, previous_ids, store, i)
                           for i, t in enumerate(cut)])
    if not sum(p.n_rows for p in parts):
        raise no_active_customers(day, end_date)
    drift = (psi_from_counts(bundle.reference, combine_counts(p.counts for p in parts if p.counts),
                             settings.serving.drift_warn_psi, settings.serving.drift_fail_psi)
             if bundle.reference else pd.DataFrame(columns=["feature", "psi", "status"]))
    rows = sorted_by_customer([p.rows for p in parts])
    load = dask.delayed(load_scored, pure=True)
    scored = [load(store, i) for i in range(len(cut))]
    return ScoreResult(rows, drift, len(cut)), merge_candidates(p.candidates for p in parts), scored


def _list_rows(tables: Tables | None, ids: pd.Index) -> Tables | None:
    """The rows of the customers who can make the list, their contacts included: suppression
    and the reasons' features read each customer's own contacts only."""
    return None if tables is None else partition_tables(tables, ids)


def list_tables(cut: Sequence[Delayed], ids: pd.Index, end_date: pd.Timestamp) -> Tables:
    """One small ``Tables`` for the list step: the candidates' rows from every partition, their
    contacts back in source order (each partition keeps their source row numbers as index)."""
    import dask

    pick = dask.delayed(_list_rows, pure=True)
    parts = [t for t in dask.compute(*[pick(t, ids) for t in cut]) if t is not None]

    def joined(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
        present = [f for f in frames if f is not None]
        return pd.concat(present) if present else None

    customers = joined([t.customers for t in parts]).reset_index(drop=True)
    events = joined([t.events for t in parts])
    contacts = joined([t.contacts for t in parts])
    return Tables(customers=customers, events=None if events is None else events.reset_index(drop=True),
                  contacts=None if contacts is None else contacts.sort_index(kind="stable"), end_date=end_date)


# ---- report cards of past lists, on partitions --------------------------------------------------


def realised_in_partition(part: Validated, customer_id: pd.Series, as_of: pd.Timestamp, horizon_days: int,
                          definition: Definition) -> tuple[np.ndarray, np.ndarray]:
    """``serving.outcomes.realised`` for the customers hashed to this partition, on its rows (a
    partition without rows answers from empty tables: those customers have no data today)."""
    tables = part.tables
    if tables is None:
        ids = customer_id.iloc[:0]
        none = pd.Series(dtype="datetime64[ns]")
        tables = Tables(customers=pd.DataFrame({"customer_id": ids, "churn_time": none}),
                        events=pd.DataFrame({"customer_id": ids, "event_time": none}), contacts=None,
                        end_date=pd.Timestamp(as_of))
    return realised(customer_id.reset_index(drop=True), tables, as_of, horizon_days, definition)


@dataclass
class PartitionedOutcomes:
    """Today's validated partitions as report cards read them (``serving.outcomes.OutcomeSource``).

    A card needs every scored customer's realised churn (the model's ranking is judged on the
    unlisted customers too), so the list's ids (one column of its ``scores.parquet``) are sent to
    the partitions their ids hash to; each answers with the local engine's pandas functions on
    its own rows inside the horizon, and only two small columns come back. Events stay on the
    workers.
    """

    validated: Sequence[Delayed]
    end_date: pd.Timestamp

    def realised(self, customer_id: pd.Series, as_of: pd.Timestamp, horizon_days: int,
                 definition: Definition) -> tuple[np.ndarray, np.ndarray]:
        import dask

        ids = pd.Series(customer_id).reset_index(drop=True)
        where = customer_partition(ids, len(self.validated))
        order = np.argsort(where, kind="stable")  # each partition's customers, in list order
        bounds = np.searchsorted(where[order], np.arange(len(self.validated) + 1))
        rows = {i: order[lo:hi] for i, (lo, hi) in enumerate(itertools.pairwise(bounds)) if hi > lo}
        answer = dask.delayed(realised_in_partition, pure=True)
        answers = dask.compute(*[answer(self.validated[i], ids.iloc[at], as_of, horizon_days, definition)
                                 for i, at in rows.items()])
        churned, contacted = np.zeros(len(ids), np.int8), np.zeros(len(ids), bool)
        for at, (churn, contact) in zip(rows.values(), answers, strict=True):
            churned[at], contacted[at] = churn, contact
        return churned, contacted


def outcome_source(raw: RawPartitions, settings: Settings) -> PartitionedOutcomes:
    """Validate the partitions (kept in a ``PartitionStore`` while the source lives) for
    ``serving.outcome_store.update_outcomes``."""
    validated, summaries = validate_partitions(raw, settings, require_label=False, for_schema=False)
    raise_problems(summaries)
    return PartitionedOutcomes(validated, global_end_date(summaries, settings))


def merged_fingerprint(prints: Sequence[dict[str, Any]], end_date: pd.Timestamp) -> dict[str, Any]:
    """``Tables.fingerprint`` of the whole input from the partitions': the same row counts and
    date ranges as the local engine's; the content hashes combine the partitions' hashes (in
    partition order), so they tell two inputs apart but differ from the local engine's."""
    out: dict[str, Any] = {"end_date": end_date.date().isoformat()}
    for key in dict.fromkeys(k for p in prints for k in p if k != "end_date"):
        values = [p[key] for p in prints if key in p]
        if key.endswith("_rows"):
            out[key] = sum(values)
        elif key.endswith("_from"):
            out[key] = min((v for v in values if v), default="")
        elif key.endswith("_to"):
            out[key] = max((v for v in values if v), default="")
        else:
            out[key] = hashlib.sha256("".join(values).encode()).hexdigest()[:16]
    return out


def score_week_partitioned(raw: RawPartitions, as_of: pd.Timestamp | None, bundle: ModelBundle,
                           model_version: str, settings: Settings, *,
                           previous_list: pd.DataFrame | Callable[[pd.Timestamp], pd.DataFrame | None] | None = None,
                           force: bool = False, model_name: str | None = None,
                           earlier_holdouts: Mapping[str, Iterable[object]] | Callable[[pd.Timestamp], Mapping[
                               str, Iterable[object]]] | None = None,
                           outcomes: Outcomes | Callable[[PartitionedOutcomes], Outcomes] | None = None
                           ) -> WeeklyOutputs:
    """``serving.weekly.score_week`` on the Dask engine, with the same outputs.

    Per partition on the workers: validation, the cut at the as-of date, the model-input check,
    scoring and drift counts. Once, on the client: the data end and as-of date, the drift and
    the list. Reasons are computed for the customers who can make the list only, from their rows
    gathered from the partitions. No process holds every score row: ``scores.parquet`` is written
    by the workers in pieces and merged in customer order by the client, slice by slice
    (``scores_on_workers``); the result's ``scores`` is that file (a ``ScoresFile``: call the
    result's ``discard`` once it is published).
    ``previous_list`` and ``earlier_holdouts`` may be functions of the as-of date
    (``serving.publish.read_previous_list``, ``read_holdouts``), known once the partitions are read;
    ``outcomes`` a function of the validated partitions (``serving.outcome_store.update_outcomes``
    on a :class:`PartitionedOutcomes`), so the cards need no second read of the data.
    """
    with worker_loss_as_error("weekly scoring"):
        return _score_week_partitioned(raw, as_of, bundle, model_version, settings, previous_list=previous_list,
                                       force=force, model_name=model_name, earlier_holdouts=earlier_holdouts,
                                       outcomes=outcomes)


def _score_week_partitioned(raw: RawPartitions, as_of: pd.Timestamp | None, bundle: ModelBundle,
                            model_version: str, settings: Settings, *,
                            previous_list: pd.DataFrame | Callable[[pd.Timestamp], pd.DataFrame | None] | None,
                            force: bool, model_name: str | None, earlier_holdouts: Any,
                            outcomes: Outcomes | Callable[[PartitionedOutcomes], Outcomes] | None) -> WeeklyOutputs:
    import dask

    with PartitionStore.beside(settings.output_dir) as store:  # each pass reads its partition from here
        validated, summaries = validate_partitions(raw, settings, require_label=False, store=store, for_schema=False)
        raise_problems(summaries)
        end = global_end_date(summaries, settings)
        whole = Tables(customers=pd.DataFrame(), events=None, contacts=None, end_date=end)
        if as_of is not None:
            check_as_of(whole, as_of)  # a date after the data: said, not scored (as the local score flow)
        if callable(outcomes):  # the cards read the whole data (each its own horizon), before the cut
            outcomes = outcomes(PartitionedOutcomes(validated, end))
        day = scoring_date(whole, as_of)
        cut_end = min(end, day - pd.Timedelta(days=1))  # as cut_at leaves it
        cut = [dask.delayed(cut_partition, pure=True)(v, end, day) for v in validated]
        text_counts, fingerprint = inputs_and_fingerprint(cut, bundle.schema, cut_end)
        bundle = bundle_for_date_partitioned(bundle, cut, day, settings)
        if callable(previous_list):
            previous_list = previous_list(day)
        if callable(earlier_holdouts):
            earlier_holdouts = earlier_holdouts(day)
        previous_ids = pd.Index([] if previous_list is None else pd.unique(previous_list["customer_id"]))
        result, candidates, scored = score_partitions(cut, day, bundle, settings, cut_end, previous_ids,
                                                      text_counts, store)
        tables = list_tables(cut, pd.Index(candidates["customer_id"]), cut_end)
        outputs = week_outputs(result, tables, day, bundle, model_version, settings, fingerprint,
                               previous_list=previous_list, force=force, model_name=model_name,
                               earlier_holdouts=earlier_holdouts, outcomes=outcomes,
                               record=scores_on_workers(scored, day, str(model_version), settings),
                               input_warnings=numbers_with_text(text_counts, source_names(settings)["customers"]))
        return replace(outputs, notes=validation_notes(summaries))


def inputs_and_fingerprint(cut: Sequence[Delayed], schema: FeatureSchema, end_date: pd.Timestamp
                           ) -> tuple[dict[str, TextCount], dict[str, Any]]:
    """One pass over the cut partitions: the numeric model inputs held as text, counted on all
    partitions' values (``check_model_inputs`` judges "mostly not numbers" on the whole data, as
    the local engine), and the input's fingerprint (``merged_fingerprint``)."""
    import dask

    look = dask.delayed(_inputs_and_fingerprint, pure=True)
    totals: dict[str, TextCount] = {}
    prints = []
    for counts, fingerprint in dask.compute(*[look(t, schema) for t in cut]):
        prints.append(fingerprint)
        for column, counted in counts.items():
            totals[column] = totals[column] + counted if column in totals else counted
    return totals, merged_fingerprint(prints, end_date)


def _inputs_and_fingerprint(tables: Tables | None, schema: FeatureSchema) -> tuple[dict[str, TextCount], dict[str, Any]]:
    if tables is None:
        return {}, {}
    return text_in_numeric_inputs(tables.customers, schema), tables.fingerprint()
