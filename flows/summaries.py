"""What the CLI prints at the end of each command: results, where they are, what to run next."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from churnflow.features.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module before it needs any training code
    from collections.abc import Mapping

    from churnflow.training.recipe import TrainedModel
    from churnflow.training.registry import RegistryResult

_SHOWN = ["pr_auc", "roc_auc", "log_loss", "brier", "lift_top_10", "recall_top_10"]


def train_result(settings: Settings, trained: TrainedModel, result: RegistryResult) -> dict[str, Any]:
    """What the train flow returns (and the CLI prints): plain data, no frames."""
    evaluation, plan = trained.evaluation, trained.plan
    return {
        "run_id": result.run_id,
        "version": result.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "objective": result.objective,
        "metrics": evaluation.metrics,
        "baselines": evaluation.baselines,
        "comparison": evaluation.comparison.to_dict(orient="records"),
        "beats_recency": evaluation.beats_recency,
        "notes": list(evaluation.notes),
        "checks": [{"name": n, "passed": p, "detail": d} for n, p, d in trained.checks],
        "plan": {"train": [str(d.date()) for d in plan.train],
                 "valid": str(plan.valid.date()) if plan.valid is not None else "",
                 "test": str(plan.test.date()), "out_of_time": plan.out_of_time},
        "trials": int(len(trained.tuning.trials)),
        "tracking_uri": settings.tracking_uri,
        "model_name": settings.tracking.model_name,
    }


def print_train_summary(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=f"model {result['model_name']} v{result['version']} — test snapshot {result['plan']['test']}"
                  + ("" if result["plan"]["out_of_time"] else " (stratified split, NOT out-of-time)"))
    table.add_column("metric")
    table.add_column("tuned", justify="right")
    baselines = result.get("baselines", {})
    for name in baselines:
        table.add_column(name, justify="right")
    for metric in _SHOWN:
        if metric not in result["metrics"]:
            continue
        row = [metric, f"{result['metrics'][metric]:.4f}"]
        row += [f"{b.get(metric, float('nan')):.4f}" for b in baselines.values()]
        table.add_row(*row)
    console.print(table)
    if not result["beats_recency"]:
        console.print("[bold red]THE TUNED MODEL DOES NOT BEAT THE RECENCY BASELINE — not promoted.[/]")
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(str(note))}")
    failed = [c for c in result.get("checks", []) if not c["passed"]]
    for c in failed:
        console.print(f"[red]behavioural check failed:[/] {escape(str(c['name']))}: {escape(str(c['detail']))}")
    verdict = "[green]promoted to champion[/]" if result["promoted"] else "[yellow]not promoted[/]"
    console.print(f"{verdict}: {escape(str(result['reason']))}")
    console.print(f"trials in study: {result['trials']}; MLflow run {result['run_id']} in {result['tracking_uri']}")
    console.print("[yellow]next:[/] churnflow score")


def reason_phrases(dictionary: Mapping[str, Any], names: Any) -> dict[str, str]:
    """Feature name → its reason phrase with the customer's values left out ("last active … days
    ago", "over time: …"): how the CLI names the top reasons, in the words the list itself uses
    (the model's own dictionary, as the report)."""
    from churnflow.serving.reasons import phrase_outlines

    outlines = phrase_outlines(dictionary)
    return {str(n): outlines[n] for n in names if n in outlines}


def print_score_summary(console: Console, result: dict[str, Any]) -> None:
    s = result["summary"]
    console.print(
        f"scored [bold]{s.get('n_scored', 0):,}[/] customers as of {result['as_of']} with model "
        f"{s.get('model_name')} v{s.get('model_version')}; [bold]{s.get('n_listed', 0):,}[/] on the list "
        f"({s.get('n_contactable', 0):,} to contact)"
    )
    for key, title in (("segments_listed", "top segments"), ("top_reasons_listed", "top reasons")):
        value = s.get(key)
        if isinstance(value, dict) and value:
            top = sorted(value.items(), key=lambda kv: -_count(kv[1]))[:3]
            words = result.get("reason_phrases", {}) if key == "top_reasons_listed" else {}
            console.print(f"{title}: " + ", ".join(escape(f"{words.get(k, k)} ({_count(v):,})") for k, v in top))
    for warning in s.get("warnings", []):
        console.print(f"[yellow]{escape(str(warning))}[/]")
    folder = Path(result["folder"])
    console.print(f"priority list: [bold]{escape(str(folder / 'priority_list.csv'))}[/]")
    console.print(f"report:        [bold]{escape(str(folder / 'report.html'))}[/]")
    console.print("[yellow]next:[/] open the report, or `churnflow report` to see the list here")


def _count(value: Any) -> int:
    if isinstance(value, dict):
        return int(value.get("count", value.get("n", 0)) or 0)
    return int(value) if isinstance(value, (int, float)) else 0


def print_where_to_look(console: Console, settings: Settings) -> None:
    console.rule("where to look")
    console.print(f"MLflow UI:  mlflow ui --backend-store-uri {settings.tracking.uri}   (then http://127.0.0.1:5000)")
    console.print("Prefect UI: prefect server start   (then http://127.0.0.1:4200; runs of this demo used a "
                  "temporary server, `churnflow schedule` keeps one running)")
    console.print("weekly:     churnflow schedule   (serves the Monday 06:00 scoring deployment)")


def latest_folder(settings: Settings, as_of: str | None) -> Path:
    from churnflow.serving.publish import published_folders

    root = settings.output_dir
    if as_of:
        folder = root / as_of
    else:
        dated = published_folders(root)
        if not dated:
            raise FileNotFoundError(f"no published lists under {root}")
        folder = dated[-1]
    if not (folder / "summary.json").exists():
        raise FileNotFoundError(f"no published list in {folder}")
    return folder


def print_published(console: Console, settings: Settings, as_of: str | None, top: int) -> None:
    import pandas as pd

    folder = latest_folder(settings, as_of)
    summary = json.loads((folder / "summary.json").read_text())
    listed = pd.read_parquet(folder / "priority_list.parquet")
    table = Table(title=f"priority list {folder.name} — model v{summary.get('model_version')}")
    for col in ("rank", "customer_id", "churn_probability", "risk_tier", "value_at_risk", "segment", "reason_1",
                "recommended_action", "status"):
        table.add_column(col)
    for row in listed.head(top).itertuples(index=False):
        table.add_row(*(str(getattr(row, c)) for c in ("rank", "customer_id", "churn_probability", "risk_tier",
                                                       "value_at_risk", "segment", "reason_1",
                                                       "recommended_action", "status")))
    console.print(table)
    console.print(f"{len(listed):,} customers on the list; files in [bold]{escape(str(folder))}[/]")
    console.print(f"report: {folder / 'report.html'}")


def _pct(value: Any) -> str:
    return "" if value is None else f"{float(value):.1%}"


def _effect(row: dict[str, Any]) -> str:
    if row.get("effect") is None:
        return "n/a" if row["closed"] else ""
    lo, hi = row["effect_ci95"]
    return f"{row['effect'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def print_outcomes(console: Console, result: dict[str, Any]) -> None:
    """One row per published list: predicted vs realised churn, realised ROC-AUC and lift, the
    campaign's effect with its 95 % interval; then each closed list's verdict in words."""
    table = Table(title="report cards of the published lists", box=box.SIMPLE_HEAD,
                  caption="v: model version; AUC: ROC-AUC (* estimated, horizon open); effect in percentage points",
                  pad_edge=False)
    for col in ("as of", "v", "predicted", "realised", "AUC", "lift", "effect [95 %]"):
        table.add_column(col, no_wrap=True)
    for row in result["lists"]:
        closed = row["closed"]
        table.add_row(row["as_of"], str(row.get("model_version") or ""), _pct(row.get("predicted")),
                      _pct(row.get("realised")) if closed else "open",
                      ("" if row.get("roc_auc") is None else f"{row['roc_auc']:.3f}") + ("" if closed else "*"),
                      "" if row.get("lift") is None else f"{row['lift']:.2f}", _effect(row))
    console.print(table)
    for row in result["lists"]:
        if row["closed"]:
            console.print(f"{row['as_of']}: {escape(str(row.get('verdict') or ''))}")
    if result["written"]:
        console.print(f"new report cards (outcome.json): {', '.join(result['written'])}")
    alarm = result["alarm"]
    style = "bold red" if alarm.get("alarm") else "green"
    console.print(f"[{style}]{escape(str(alarm.get('message', '')))}[/]")
    if alarm.get("alarm"):
        console.print("[yellow]next:[/] churnflow train, then compare the challenger with the champion")


def print_demo_loop(console: Console, teams: list[dict[str, Any]], score: dict[str, Any]) -> None:
    """What the demo's retention team did with each past list, and what its report card found."""
    for team in teams:
        day = team["as_of"]
        if not team.get("already_worked"):
            console.print(f"demo team: called {team['n_contacted']:,} customers of the list of {day} (not its "
                          f"control group); {team['n_saved']:,} stayed because of the call (true effect "
                          f"{team['true_effect'] * 100:+.1f} percentage points)")
        card_path = Path(score["folder"]).parent / day / "outcome.json"
        if not card_path.exists():
            console.print(f"[yellow]no report card for the list of {day} yet[/]")
            continue
        card = json.loads(card_path.read_text(encoding="utf-8"))
        quality, campaign = card["model_quality"], card["campaign"]
        auc = "" if quality.get("roc_auc") is None else f"realised ROC-AUC {quality['roc_auc']:.3f}; "
        console.print(f"report card of {day}: realised churn {_pct(card.get('realised_churn_rate'))} against "
                      f"{_pct(card.get('predicted_churn_rate'))} predicted; {auc}campaign: "
                      f"{escape(str(campaign.get('verdict')))}")
        console.print(f"card: [bold]{escape(str(card_path))}[/]")
    console.print("history of every past list: today's report, section 'Past lists: what happened'")
