"""One week's outputs from validated tables and a model: the whole scoring recipe, no I/O.

``score_week`` is what the ``score`` flow, ``churnflow score``, the benchmarks and a Python session
call. It decides nothing the flow used to decide on its own: the data are cut at the as-of date
(nothing on or after it is seen), today's customers table is checked against the model's inputs
(a missing column is a schema error that ``force`` does not override: it is not drift), every
active customer is scored in partitions, the drift gate runs, reasons are computed for the
listed customers only, and the priority list, summary and report are built. Reading the sources,
loading the model and publishing stay outside (``features.contracts``, ``training.registry``,
``serving.publish``), so this function is pure: the same inputs give the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from churnflow.features.build import latest_as_of, parse_number_text, with_btyd_fitted
from churnflow.features.contracts import Tables, cut_at, source_names
from churnflow.features.schema import FeatureSchema, SchemaMismatchError
from churnflow.features.settings import Settings
from churnflow.serving.holdout import assign_holdout, holdout_summary, open_holdout_ids
from churnflow.serving.outcomes import Outcomes, expected_performance, outcome_groups
from churnflow.serving.priority import Population, build_summary, team_list
from churnflow.serving.publish import ScoresFile
from churnflow.serving.reasons import phrase_outlines
from churnflow.serving.report import render_report
from churnflow.serving.score import (
    ScoreResult,
    drift_gate,
    priority_list_with_reasons,
    score_customers,
    scores_table,
)
from churnflow.training.bundle import ModelBundle


@dataclass(frozen=True)
class WeeklyOutputs:
    """Everything one scoring run publishes, plus what the caller may log."""

    as_of: pd.Timestamp
    scores: pd.DataFrame | ScoresFile
    """``scores.parquet``: every scored customer (no reasons, no contact fields) with the list's
    ``status`` ("unlisted" for the others): the record report cards are computed from. On the
    Dask engine the file itself, already written (:meth:`discard` it once published)."""
    priority_list: pd.DataFrame
    """The whole list, control group included (``priority_list.parquet``); the team works from
    :attr:`team_list`."""
    dropped: pd.DataFrame
    """Customers on last week's list who are not on this one, and why."""
    summary: dict[str, Any]
    report_html: str
    drift: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    n_partitions: int = 1
    notes: list[str] = field(default_factory=list)
    """What validation decided that the user must hear (``Tables.notes``): the Dask engine
    validates inside the run, so its outputs carry them for the flow to log."""

    def discard(self) -> None:
        """Remove the working folder of a scores table written ahead (published or not); idempotent."""
        if isinstance(self.scores, ScoresFile):
            self.scores.discard()

    @property
    def team_list(self) -> pd.DataFrame:
        """The list without the control group: the CSV, the list table and the report show this."""
        return team_list(self.priority_list)


def scoring_date(tables: Tables, as_of: pd.Timestamp | None) -> pd.Timestamp:
    """The as-of date of a run: the given one, else the day after the data end (or today)."""
    if as_of is None:
        return latest_as_of(tables)
    return pd.Timestamp(as_of).normalize().as_unit("ns")


def bundle_for_date(bundle: ModelBundle, tables: Tables, as_of: pd.Timestamp, settings: Settings) -> ModelBundle:
    """The bundle to score ``as_of`` with, the same for every partition of customers.

    The model's BG/NBD parameters hold from the date they were fitted on. Re-scoring an earlier
    week needs parameters fitted at that date, point in time: fitted here once, on every customer
    active then, rather than by each partition on its own customers (which would make the scores
    depend on how the customers were split).
    """
    fitted_at = bundle.schema.btyd.get("as_of") if bundle.schema.btyd else None
    if fitted_at is None or as_of >= pd.Timestamp(fitted_at):
        return bundle
    return replace(bundle, schema=with_btyd_fitted(tables, as_of, settings, bundle.schema))


STATUS_UNLISTED = "unlisted"
HOLDOUT_SEED = 0
"""Key of the control-group draw besides the as-of date (``serving.holdout``); fixed, so a rerun of
any date holds back the same customers whatever the training seed."""


def with_status(scores: pd.DataFrame, priority_list: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with each customer's status on the list (``"unlisted"`` when not on it)."""
    status = priority_list.drop_duplicates("customer_id").set_index("customer_id")["status"].astype(object)
    out = scores.copy()
    out["status"] = out["customer_id"].map(status).fillna(STATUS_UNLISTED).astype(object)
    return out


def hold_back(priority_list: pd.DataFrame, day: pd.Timestamp, settings: Settings,
              earlier_holdouts: Mapping[str, Iterable[object]] | None) -> pd.DataFrame:
    """The list with this date's control group drawn and earlier lists' open control groups kept
    out of reach (``serving.holdout.assign_holdout``)."""
    still_open = open_holdout_ids(earlier_holdouts or {}, day, settings.churn.horizon_days)
    return assign_holdout(priority_list, day, settings.serving.holdout_share, HOLDOUT_SEED, still_open)


def check_model_inputs(tables: Tables, schema: FeatureSchema, settings: Settings,
                       text_counts: Mapping[str, TextCount] | None = None) -> None:
    """Refuse tables that lack a column or source the model was trained on.

    Without this check the features built from a missing column are all missing, which the drift
    gate would report as drift (and ``--force`` would publish). The message names the column as
    it is called in the user's file and the file itself. ``text_counts``: the numeric inputs'
    :func:`text_in_numeric_inputs` of all the data, when ``tables`` are one partition of them.
    """
    files = source_names(settings)
    mapped = settings.data.columns
    customers = set(tables.customers.columns)
    attributes = [*schema.numeric_attributes, *schema.categorical_levels]
    missing = sorted({schema.attribute_sources.get(name, name) for name in attributes}
                     - customers)
    if schema.has_signup and "signup_time" not in customers:
        missing.append(mapped.signup_time or "signup_time")
    problems = [f"{files['customers']} has no column {', '.join(repr(c) for c in missing)}"] if missing else []
    if text_counts is None:
        text_counts = text_in_numeric_inputs(tables.customers, schema)
    problems += _numbers_turned_text(text_counts, files["customers"])
    if schema.has_events and tables.events is None:
        problems.append("no events table is configured (data.events)")
    elif schema.has_amount and tables.events is not None and "amount" not in tables.events.columns:
        problems.append(f"{files['events']} has no column '{mapped.amount or 'amount'}' (data.columns.amount)")
    if schema.has_contacts and tables.contacts is None:
        problems.append("no contacts table is configured (data.contacts)")
    if problems:
        raise SchemaMismatchError(
            "today's data lack input(s) the model was trained on, or hold them in another form: " + "; ".join(problems) + ". "
            "Restore the column or source (or its name in [data.columns]), or retrain with "
            "`churnflow train` on data without it. `--force` does not override this: the model "
            "would score every customer as if the value were unknown."
        )


@dataclass(frozen=True)
class TextCount:
    """A numeric model input held as text today: how many values are not numbers, of how many,
    and the smallest of them (an example that does not depend on row order: counts of parts add up)."""

    not_numbers: int
    values: int
    example: str | None = None

    def __add__(self, other: TextCount) -> TextCount:
        examples = [e for e in (self.example, other.example) if e is not None]
        return TextCount(self.not_numbers + other.not_numbers, self.values + other.values,
                         min(examples) if examples else None)


def text_in_numeric_inputs(customers: pd.DataFrame, schema: FeatureSchema) -> dict[str, TextCount]:
    """Per numeric model input the customers table holds as text, its :class:`TextCount`."""
    found = {}
    for name in schema.numeric_attributes:
        column = schema.attribute_sources.get(name, name)
        if column not in customers or pd.api.types.is_numeric_dtype(customers[column]):
            continue
        text = customers[column].dropna().astype("string").str.strip()
        text = text[text != ""]
        bad = text[parse_number_text(text).isna()]
        found[column] = TextCount(len(bad), len(text), str(bad.min()) if len(bad) else None)
    return found


def _numbers_turned_text(counts: Mapping[str, TextCount], file: str) -> list[str]:
    """Numeric model inputs whose values today are mostly not numbers ("35.99 EUR", "abc"): the
    model would see them all as unknown, a type change the drift gate must not be left to find."""
    return [f"{file} column '{column}' held numbers at training, but {c.not_numbers:,} of {c.values:,} "
            f"values today are not (e.g. {c.example!r})"
            for column, c in counts.items() if c.values and c.not_numbers / c.values > 0.5]


def numbers_with_text(counts: Mapping[str, TextCount], file: str) -> list[str]:
    """Numeric model inputs with a few values today that are not numbers ("forty" among ages):
    scored as unknown for those customers, which the team should hear (more than half refuses
    the run: :func:`_numbers_turned_text`)."""
    return [f"{file} column '{column}': {c.not_numbers:,} of {c.values:,} values are not numbers (e.g. "
            f"{c.example!r}); those customers are scored as if the value were unknown: fix them in the source"
            for column, c in counts.items() if c.not_numbers and c.not_numbers / c.values <= 0.5]


def score_week(tables: Tables, as_of: pd.Timestamp | None, bundle: ModelBundle, model_version: str,
               settings: Settings, *, previous_list: pd.DataFrame | None = None,
               force: bool = False, model_name: str | None = None,
               earlier_holdouts: Mapping[str, Iterable[object]] | None = None,
               outcomes: Outcomes | None = None) -> WeeklyOutputs:
    """Score every active customer as of ``as_of`` and build the week's list, summary and report.

    ``previous_list``: last week's published list (``serving.publish.read_previous_list``), for
    each customer's status and the dropped customers. ``force``: publish despite drift above
    ``serving.drift_fail_psi`` (never despite missing model inputs). ``earlier_holdouts``: as-of
    date -> control-group ids of the published lists (``serving.publish.read_holdouts``); those
    whose horizon is still open are not contacted again. ``serving.holdout_share`` of the rest
    is held back as this list's control group. ``outcomes``: the report cards of the published
    lists (``serving.outcome_store.update_outcomes``), for the report's history and the decay alarm.
    Raises ``SchemaMismatchError`` or ``DriftRefusedError`` (both ``ChurnflowError``).
    """
    day = scoring_date(tables, as_of)
    tables = cut_at(tables, day)
    text_counts = text_in_numeric_inputs(tables.customers, bundle.schema)
    check_model_inputs(tables, bundle.schema, settings, text_counts)
    bundle = bundle_for_date(bundle, tables, day, settings)
    result = score_customers(tables, day, bundle, settings)
    return week_outputs(result, tables, day, bundle, model_version, settings, tables.fingerprint(),
                        previous_list=previous_list, force=force, model_name=model_name,
                        earlier_holdouts=earlier_holdouts, outcomes=outcomes,
                        input_warnings=numbers_with_text(text_counts, source_names(settings)["customers"]))


ScoresRecord = Callable[[pd.DataFrame], tuple["pd.DataFrame | ScoresFile", Population]]
"""Makes ``scores.parquet``'s table from the week's list, and the population the summary needs."""


def scores_in_memory(scored: pd.DataFrame, model_version: str) -> ScoresRecord:
    """The local engine's record: the scores table built whole from every score row."""

    def record(priority_list: pd.DataFrame) -> tuple[pd.DataFrame, Population]:
        scores = with_status(scores_table(scored, model_version), priority_list)
        return scores, Population.of(scores)

    return record


def week_outputs(result: ScoreResult, tables: Tables, day: pd.Timestamp, bundle: ModelBundle, model_version: str,
                 settings: Settings, fingerprint: dict[str, Any], *, previous_list: pd.DataFrame | None = None,
                 force: bool = False, model_name: str | None = None,
                 earlier_holdouts: Mapping[str, Iterable[object]] | None = None,
                 outcomes: Outcomes | None = None, record: ScoresRecord | None = None,
                 input_warnings: Sequence[str] = ()) -> WeeklyOutputs:
    """The week's outputs from every customer's scores: drift gate, list with reasons, summary,
    report. ``tables`` (cut at ``day``) need only hold the rows of the customers who can make
    the list and every contact: the Dask engine passes just those, gathered from its partitions.
    ``record``: how the scores table is made once the list is known; the Dask engine passes only
    the rows that can matter to the list in ``result`` and writes the table partition by partition.
    ``input_warnings``: what the inputs' checks found that does not stop the run (:func:`numbers_with_text`)."""
    warnings = [*input_warnings, *drift_gate(result.drift, settings, force)]
    priority_list, dropped, scored = priority_list_with_reasons(
        tables, day, bundle, settings, result.scored, previous_list)
    priority_list = hold_back(priority_list, day, settings, earlier_holdouts)
    scores, population = (record or scores_in_memory(result.scored, str(model_version)))(priority_list)
    outcomes = (outcomes or Outcomes()).known_at(day, settings.serving.decay_alarm_drop)
    if outcomes.alarm.get("alarm"):
        warnings = [*warnings, outcomes.alarm["message"]]
    extra = {
        "model_name": model_name or settings.tracking.model_name,
        "model_version": str(model_version),
        "input_fingerprint": fingerprint,
        "warnings": warnings,
        "test_metrics": {k: v for k, v in bundle.metrics.get("test", {}).items() if isinstance(v, int | float)},
        "horizon_days": settings.churn.horizon_days,
        **holdout_summary(priority_list, settings.serving.holdout_share),
        "estimate_before_horizon": expected_performance(population.probability,
                                                        outcome_groups(pd.Series(population.status))),
        "decay_alarm": outcomes.alarm,
    }
    summary = build_summary(scored, priority_list, dropped, result.drift, settings, day, extra=extra,
                            population=population)
    html = render_report(summary, team_list(priority_list), gains=bundle.metrics.get("gains"), drift=result.drift,
                         outcomes=outcomes, reason_words=phrase_outlines(bundle.dictionary))
    return WeeklyOutputs(
        as_of=day, scores=scores, priority_list=priority_list,
        dropped=dropped, summary=summary, report_html=html, drift=result.drift, warnings=warnings,
        n_partitions=result.n_partitions,
    )
