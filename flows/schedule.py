"""The weekly schedule: serve the ``score`` deployment on a cron from settings.

Schedules need a real Prefect server (an ephemeral one only warns and schedules nothing). When
``PREFECT_API_URL`` is not set we start ``prefect server start`` on loopback ourselves, say so,
and stop it (by process group) when serving ends; in production point ``PREFECT_API_URL`` at
your server, or deploy ``prefect.yaml`` to a work pool instead.
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

from features.settings import Settings

DEFAULT_PORT = 4200


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


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
        while not _healthy(api_url):
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
    """Serve the weekly scoring deployment until interrupted (Ctrl-C or SIGTERM)."""
    console = console or Console()
    if os.environ.get("PREFECT_API_URL"):
        _serve(settings, config, console)
        return
    if not start_server:
        raise SystemExit(
            "PREFECT_API_URL is not set. Start a server with `prefect server start` and run "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, or drop --no-start-server."
        )
    console.print("PREFECT_API_URL is not set: starting a local Prefect server (`prefect server start`) ...")
    with local_prefect_server() as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        console.print(f"Prefect server at {api_url.removesuffix('/api')} (UI); it stops when this command stops.")
        _serve(settings, config, console)


def _serve(settings: Settings, config: str | None, console: Console) -> None:
    from prefect.schedules import Cron

    from flows.score_flow import score_flow

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
