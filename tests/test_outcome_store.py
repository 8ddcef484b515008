"""Report cards of published lists, end to end: real scoring, real folders, a real MLflow store.

A list is scored and published for a past date whose horizon has passed and for a recent date
whose horizon is open; ``update_outcomes`` writes the first one's ``outcome.json`` once, logs it
on the model version that produced the list, keeps the second one's label-free estimate, and
rings the decay alarm for a model whose test ROC-AUC it does not live up to.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnflow.features.contracts import Tables, load_tables
from churnflow.features.settings import load_settings
from churnflow.serving.outcome_store import LOGGED_MARK, OUTCOMES_TAG, update_outcomes
from churnflow.serving.outcomes import horizon_end, mlflow_step
from churnflow.serving.publish import (
    publish_week,
    read_holdouts,
    read_previous_list,
    standard_writers,
)
from churnflow.serving.weekly import score_week
from tests.conftest import write_project
from tests.test_scoring import _bundle

CLOSED, OPEN = pd.Timestamp("2026-06-01"), pd.Timestamp("2026-10-05")  # data end 2026-10-30, horizon 90


def _register(settings) -> str:
    """A registered version with a logged model, as ``training.registry`` leaves one."""
    from churnflow.training.registry import experiment_id, registry_client

    client = registry_client(settings)
    exp = experiment_id(client, settings)
    run_id = client.create_run(exp, run_name="training").info.run_id
    model = client.create_logged_model(exp, name="model", source_run_id=run_id)
    client.create_registered_model(settings.tracking.model_name)
    return str(client.create_model_version(settings.tracking.model_name, source=model.artifact_location,
                                           run_id=run_id, model_id=model.model_id).version)


def _publish(settings, tables, bundle, version, day, outcomes=None) -> Path:
    week = score_week(tables, day, bundle, version, settings, force=True,
                      previous_list=read_previous_list(settings.output_dir, day),
                      earlier_holdouts=read_holdouts(settings.output_dir, day), outcomes=outcomes)
    files = standard_writers(week.scores, week.priority_list, week.summary, week.report_html)
    return publish_week(settings.output_dir, day, files)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("outcomes")
    config = write_project(root, n_customers=1500, seed=11)
    config.write_text(config.read_text().replace("capacity = 50", "capacity = 300\nholdout_share = 0.2"))
    settings = load_settings(config)
    tables = load_tables(settings)
    bundle = _bundle(tables, settings)
    bundle = replace(bundle, metrics={"test": {"roc_auc": 0.97}})  # a promise the model cannot keep
    version = _register(settings)
    folders = [_publish(settings, tables, bundle, version, day) for day in (CLOSED, OPEN)]
    return settings, tables, bundle, version, folders


def test_a_closed_list_gets_its_card_once_and_an_open_one_keeps_its_estimate(project) -> None:
    settings, tables, _, version, (closed, still_open) = project
    first = update_outcomes(settings, tables)
    assert first.written == [str(CLOSED.date())] and not (still_open / "outcome.json").exists()
    card = json.loads((closed / "outcome.json").read_text())
    assert card["as_of"] == "2026-06-01" and card["model_version"] == version and card["horizon_closed"]
    assert card["groups"]["holdout"] > 0 and card["groups"]["contact"] > 0
    assert card["model_test_roc_auc"] == 0.97 and card["holdout_share"] == 0.2
    assert [e["as_of"] for e in first.estimates] == ["2026-10-05"]
    assert first.estimates[0]["estimate_before_horizon"]["estimate"] is True

    written = (closed / "outcome.json").read_bytes()
    fewer = Tables(customers=tables.customers, events=tables.events.iloc[::2], contacts=tables.contacts,
                   end_date=tables.end_date)
    again = update_outcomes(settings, fewer)  # other data later: the card is read back, never redone
    assert again.written == [] and (closed / "outcome.json").read_bytes() == written
    assert again.cards == first.cards


def test_realised_metrics_are_logged_on_the_model_version_with_the_date_as_step(project) -> None:
    from churnflow.training.registry import experiment_id, registry_client

    settings, tables, _, version, _ = project
    update_outcomes(settings, tables)
    client = registry_client(settings)
    runs = client.search_runs([experiment_id(client, settings)],
                              filter_string=f"tags.`{OUTCOMES_TAG}` = '{settings.tracking.model_name}/{version}'")
    assert len(runs) == 1
    run = runs[0]
    mv = client.get_model_version(settings.tracking.model_name, version)
    assert mv.tags["outcomes_run_id"] == run.info.run_id and mv.tags["realised_as_of"] == "2026-06-01"
    card = json.loads((project[4][0] / "outcome.json").read_text())
    assert mv.tags["realised_roc_auc"] == f"{card['model_quality']['roc_auc']:.4f}"
    history = client.get_metric_history(run.info.run_id, "realised_roc_auc")
    assert [m.step for m in history] == [mlflow_step(CLOSED)] and history[0].model_id == mv.model_id
    update_outcomes(settings, tables)  # nothing logged twice
    assert len(client.get_metric_history(run.info.run_id, LOGGED_MARK)) == 1


def test_the_decay_alarm_rings_in_the_next_list_and_its_report(project) -> None:
    settings, tables, bundle, version, _ = project
    outcomes = update_outcomes(settings, tables)
    assert outcomes.alarm["alarm"] and outcomes.alarm["model_version"] == version
    later = pd.Timestamp("2026-10-12")
    folder = _publish(settings, tables, bundle, version, later, outcomes)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["decay_alarm"]["alarm"] and any("Model decay" in w for w in summary["warnings"])
    html = (folder / "report.html").read_text()
    assert "Recommendation: retrain the model" in html and "Past lists: what happened" in html
    # the list of CLOSED as of a date before its horizon ended: the card was not known yet
    before = outcomes.known_at(horizon_end(CLOSED, 90) - pd.Timedelta(days=1), 0.05)
    assert before.cards == [] and [e["as_of"] for e in before.estimates] == ["2026-06-01"]
    assert not before.alarm["alarm"]


def test_a_card_reads_nothing_outside_its_horizon(project, tmp_path) -> None:
    """Mutation test on the wired path: rows before the list or after its horizon change nothing."""
    import shutil

    settings, tables, _, _, (closed, _) = project
    rng = np.random.default_rng(3)
    t, end = CLOSED, horizon_end(CLOSED, 90)
    ev = tables.events
    outside = ev.loc[((ev["event_time"] < t) | (ev["event_time"] >= end)).to_numpy()]
    inside = ev.loc[((ev["event_time"] >= t) & (ev["event_time"] < end)).to_numpy()]
    shuffled = outside.assign(customer_id=rng.permutation(outside["customer_id"].to_numpy()))
    mutated = Tables(customers=tables.customers,
                     events=pd.concat([inside, shuffled.iloc[: len(shuffled) // 2]]).sort_values(
                         ["customer_id", "event_time"], kind="stable"),
                     contacts=tables.contacts.loc[tables.contacts["contact_time"].between(t, end, inclusive="left")
                                                  .to_numpy()],
                     end_date=tables.end_date)
    cards = []
    for name, data in (("clean", tables), ("mutated", mutated)):
        root = tmp_path / name
        shutil.copytree(closed, root / closed.name)
        (root / closed.name / "outcome.json").unlink(missing_ok=True)
        local = settings.model_copy(update={"serving": settings.serving.model_copy(update={"output_dir": str(root)})})
        update_outcomes(local, data, log_to_mlflow=False)
        cards.append((root / closed.name / "outcome.json").read_bytes())
    assert cards[0] == cards[1]
