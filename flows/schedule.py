"""The weekly schedule: serve the ``score`` deployment on the cron of ``[schedule]``.

``[schedule]`` in the settings is the one place the cron, time zone and deployment live:
``churnflow schedule`` either serves the deployment from its own process or, with ``[schedule]
work_pool`` set, registers it on that Prefect work pool (generated from the settings; there is no
``prefect.yaml`` to keep in step). See the README, "The weekly schedule".

Schedules need a real Prefect server (an ephemeral one only warns and schedules nothing). When
no API URL is configured (``PREFECT_API_URL`` or the Prefect profile) we start ``prefect server
start`` on loopback ourselves, say so, point this command's Prefect settings at it (a settings
context, not a process-wide environment change; flow-run processes inherit it) and stop the
server (by process group) when serving ends. In production point ``PREFECT_API_URL`` at your
server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from churnflow.features.settings import Settings

DEFAULT_PORT = 4200


def prefect_health(api_url: str, timeout: float = 2.0) -> str | None:
    """None when ``<api_url>/health`` answers 200; otherwise what went wrong, in words."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return None if response.status == 200 else f"answered HTTP {response.status}"
    except (OSError, ValueError) as exc:  # URLError is an OSError; ValueError: not a URL
        return str(getattr(exc, "reason", exc)) or type(exc).__name__


def configured_api_url() -> str:
    """The Prefect API URL from the environment or the active Prefect profile ("" if none)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or ""


@contextmanager
def local_prefect_server(port: int = DEFAULT_PORT, timeout: float = 90.0) -> Iterator[str]:
    """Start ``prefect server start`` on 127.0.0.1 in its own process group; yield its API URL."""
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect) if prefect.exists() else "prefect", "server", "start", "--host", "127.0.0.1",
           "--port", str(port)]
    env = os.environ | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while prefect_health(api_url) is not None:
            if proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(cmd)}` exited with code {proc.returncode}; is port {port} free?")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not become healthy within {timeout:.0f} s")
            time.sleep(0.5)
        yield api_url
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group (a plain SIGTERM can orphan the server's workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def serve_weekly(settings: Settings, config: str | None, start_server: bool = True,
                 console: Console | None = None) -> None:
    """Put the weekly scoring on the cron of ``[schedule]``, the one place it is configured.

    With ``[schedule] work_pool`` set, register the deployment on that Prefect work pool (its
    workers run it) and return; otherwise serve it from this process until interrupted (Ctrl-C or
    SIGTERM), starting a local Prefect server first when no API URL is configured.
    """
    console = console or Console()
    if settings.schedule.work_pool:
        deploy_weekly(settings, config, console)
        return
    if configured_api_url():
        _serve(settings, config, console)
        return
    if not start_server:
        raise SystemExit(
            "PREFECT_API_URL is not set. Start a server with `prefect server start` and run "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, or drop --no-start-server."
        )
    console.print("PREFECT_API_URL is not set: starting a local Prefect server (`prefect server start`) ...")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with local_prefect_server() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
        console.print(f"Prefect server at {api_url.removesuffix('/api')} (UI); it stops when this command stops.")
        _serve(settings, config, console)


CODE_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding ``flows/`` (this checkout, or site-packages): where workers load the flow."""
RUN_ENV = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def deploy_weekly(settings: Settings, config: str | None, console: Console | None = None) -> str:
    """Register ``score/<deployment_name>`` on ``[schedule] work_pool`` with the settings' cron.

    Workers on that pool run it from :data:`CODE_ROOT` with ``config`` (so the worker's machine
    needs this checkout, the data and the MLflow store the settings name). At most one run at a
    time. Rerunning updates the deployment in place. Returns the deployment id.
    """
    from prefect import Flow
    from prefect.schedules import Cron

    sch = settings.schedule
    url = configured_api_url()
    if not url:
        raise SystemExit("[schedule] work_pool needs a Prefect server: set PREFECT_API_URL (e.g. "
                         "`export PREFECT_API_URL=http://127.0.0.1:4200/api`) and create the pool once "
                         f"with `prefect work-pool create {sch.work_pool} --type process`.")
    problem = prefect_health(url)
    if problem is not None:
        raise SystemExit(f"the Prefect server at {url} does not answer ({problem}); start it or fix PREFECT_API_URL.")
    flow = Flow.from_source(source=str(CODE_ROOT), entrypoint="flows/score_flow.py:score_flow")
    try:
        deployment_id = flow.deploy(
            name=sch.deployment_name, work_pool_name=sch.work_pool,
            schedules=[Cron(sch.cron, timezone=sch.timezone)], parameters={"config": config},
            tags=["churnflow", "weekly"], concurrency_limit=1, job_variables={"env": RUN_ENV},
            build=False, push=False, print_next_steps=False,
        )
    except ValueError as exc:  # Prefect's message for a missing pool names it
        raise SystemExit(f"{exc}\nCreate the pool once with `prefect work-pool create {sch.work_pool} "
                         "--type process`, then rerun.") from None
    (console or Console()).print(
        f"deployment [bold]score/{sch.deployment_name}[/] on work pool '{sch.work_pool}', cron '{sch.cron}' "
        f"({sch.timezone}). Start a worker where the code and data live: "
        f"`prefect worker start --pool {sch.work_pool}`."
    )
    return str(deployment_id)


def _serve(settings: Settings, config: str | None, console: Console) -> None:
    from prefect.schedules import Cron

    from churnflow.flows.score_flow import score_flow

    sch = settings.schedule
    console.print(
        f"serving deployment [bold]score/{sch.deployment_name}[/] on cron '{sch.cron}' ({sch.timezone}); "
        "the as-of date is computed when each run starts. Ctrl-C to stop."
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    score_flow.serve(
        name=sch.deployment_name,
        schedules=[Cron(sch.cron, timezone=sch.timezone)],
        parameters={"config": config},
        tags=["churnflow", "weekly"],
        print_starting_message=False,
    )
