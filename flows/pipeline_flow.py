"""Flow: train, then score with whatever is champion afterwards (the whole weekly job)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from churnflow.flows.score_flow import score_flow
from churnflow.flows.tasks import run_name
from churnflow.flows.train_flow import train_flow


@flow(name="pipeline", flow_run_name=run_name("pipeline"), validate_parameters=True)
def pipeline_flow(config: str | None = None, as_of: str | None = None, trials: int | None = None,
                  force: bool = False) -> dict[str, Any]:
    """Train as of ``as_of`` and publish that date's list; the two runs appear as subflows."""
    trained = train_flow(config=config, as_of=as_of, trials=trials)
    scored = score_flow(config=config, as_of=as_of, force=force)
    return {"train": trained, "score": scored}
