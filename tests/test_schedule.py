"""`churnflow schedule` against a real Prefect server: the weekly run is created in the configured
time zone, and the served deployment executes a run end to end.

Everything runs in subprocesses with an explicit environment (PREFECT_HOME in tmp_path), so this
test neither uses nor disturbs the session's `prefect_test_harness`, and ~/.prefect is untouched.
The API is read over plain HTTP (urllib), so no in-process Prefect settings change either.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from churnflow.flows.schedule import CODE_ROOT, local_prefect_server, stop_process_group
from tests.conftest import write_project

TZ = "America/New_York"  # not UTC, so a schedule that ignored the zone would be off by 4-5 hours
DEPLOYMENT = "weekly-score"
CHURNFLOW = str(Path(sys.executable).with_name("churnflow"))

SCHEDULE_TOML = f"""
[schedule]
cron = "0 6 * * 1"
timezone = "{TZ}"
deployment_name = "{DEPLOYMENT}"
"""

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(api_url: str, method: str, path: str, body: dict | None = None, attempts: int = 5) -> Any:
    """One REST call; a busy local server (503, SQLite locked on 2 cores) is asked again."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        req = urllib.request.Request(f"{api_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts - 1:
                raise
        time.sleep(1 + attempt)
    return None


def _tail(log: Path, n: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def next_monday_0600(after: datetime, tz: ZoneInfo) -> datetime:
    """The first Monday 06:00 wall-clock time in ``tz`` strictly after ``after``."""
    local = after.astimezone(tz)
    candidate = (local + timedelta(days=-local.weekday() % 7)).replace(
        hour=6, minute=0, second=0, microsecond=0)
    if candidate <= local:
        candidate = (candidate + timedelta(days=7)).replace(hour=6)
    return candidate


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_schedule_serves_weekly_score_in_configured_timezone(tmp_path: Path, monkeypatch) -> None:
    config = write_project(tmp_path, extra_toml=SCHEDULE_TOML)

    prefect_home = tmp_path / "prefect_home"
    quiet = {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(prefect_home),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    # local_prefect_server() builds its environment from os.environ: monkeypatch restores it.
    for key, value in quiet.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHURNFLOW_"))}
    env |= quiet | {
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",  # serve picks up the triggered run within ~2 s
        "COLUMNS": "200",
        "PYTHONPATH": str(CODE_ROOT),  # the code under test, not whatever copy is installed
    }

    tz = ZoneInfo(TZ)
    serve_log = tmp_path / "serve.log"
    with local_prefect_server(port=_free_port(), timeout=90) as api_url:
        env["PREFECT_API_URL"] = api_url

        # 1. a champion to score with (trained against the same server: no temporary one)
        train = subprocess.run([CHURNFLOW, "train", "--config", str(config)], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=150)
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]

        # 2. serve the weekly deployment until stopped
        started = datetime.now(UTC)
        with serve_log.open("wb") as log:
            proc = subprocess.Popen([CHURNFLOW, "schedule", "--config", str(config)], env=env,
                                    cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            deployment, scheduled = None, []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"`churnflow schedule` exited:\n{_tail(serve_log)}"
                try:
                    deployment = _api(api_url, "GET", f"/deployments/name/score/{DEPLOYMENT}")
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:
                        raise
                if deployment:
                    runs = _api(api_url, "POST", "/flow_runs/filter", {
                        "deployments": {"id": {"any_": [deployment["id"]]}},
                        "sort": "EXPECTED_START_TIME_ASC",
                    })
                    scheduled = [r for r in runs if r["auto_scheduled"]]
                    if scheduled:
                        break
                time.sleep(1)
            assert deployment, f"deployment score/{DEPLOYMENT} never appeared:\n{_tail(serve_log)}"
            assert scheduled, f"no scheduled run was created:\n{_tail(serve_log)}"

            (schedule,) = [s["schedule"] for s in deployment["schedules"]]
            assert schedule["cron"] == "0 6 * * 1"
            assert schedule["timezone"] == TZ
            assert deployment["parameters"]["config"] == str(config.resolve())

            first = scheduled[0]
            expected_start = datetime.fromisoformat(first["expected_start_time"])
            local = expected_start.astimezone(tz)
            assert (local.weekday(), local.hour, local.minute) == (0, 6, 0), local.isoformat()
            assert local == next_monday_0600(started, tz), (local.isoformat(), started.isoformat())
            assert expected_start.astimezone(UTC).hour != 6  # the zone was applied, not UTC
            # Still waiting, unless this test happened to straddle Monday 06:00 New York time.
            if expected_start > datetime.now(UTC) + timedelta(seconds=5):
                assert first["state_type"] == "SCHEDULED", first["state_type"]

            # 3. run it now; the serve process executes it
            run = _api(api_url, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                run = _api(api_url, "GET", f"/flow_runs/{run['id']}")
                if run["state_type"] in TERMINAL:
                    break
                assert proc.poll() is None, f"`churnflow schedule` exited:\n{_tail(serve_log)}"
                time.sleep(1)
            assert run["state_type"] == "COMPLETED", (run["state_type"], _tail(serve_log))
        finally:
            stop_process_group(proc)
        assert proc.poll() is not None

    from churnflow.features.build import latest_as_of
    from churnflow.features.contracts import load_tables
    from churnflow.features.settings import load_settings

    as_of = latest_as_of(load_tables(load_settings(config))).date().isoformat()
    assert (tmp_path / "outputs" / as_of / "priority_list.csv").is_file(), sorted(
        p.relative_to(tmp_path).as_posix() for p in (tmp_path / "outputs").rglob("*"))


def test_local_server_url_reaches_prefect_settings_not_the_environment(tmp_path: Path, monkeypatch) -> None:
    """Without a configured API URL, `serve_weekly` points Prefect's settings (which the runner
    hands to each flow-run process) at the server it started, and leaves os.environ alone."""
    from contextlib import contextmanager

    from prefect.settings import get_current_settings

    import churnflow.flows.schedule as schedule
    from churnflow.features.settings import load_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(schedule, "configured_api_url", lambda: "")
    url = "http://127.0.0.1:9/api"

    @contextmanager
    def fake_server():
        yield url

    seen: dict[str, object] = {}

    def fake_serve(settings, config, console) -> None:
        current = get_current_settings()
        seen["api_url"] = current.api.url
        seen["child_env"] = current.to_environment_variables(exclude_unset=True).get("PREFECT_API_URL")
        seen["os_environ"] = os.environ.get("PREFECT_API_URL")

    monkeypatch.setattr(schedule, "local_prefect_server", fake_server)
    monkeypatch.setattr(schedule, "_serve", fake_serve)
    schedule.serve_weekly(load_settings(write_project(tmp_path)), None)
    assert seen == {"api_url": url, "child_env": url, "os_environ": None}
    assert "PREFECT_API_URL" not in os.environ
    assert get_current_settings().api.url != url  # restored when serving ends


def test_prefect_health_says_what_went_wrong() -> None:
    from churnflow.flows.schedule import prefect_health

    port = _free_port()  # nothing listens there
    assert "refused" in (prefect_health(f"http://127.0.0.1:{port}/api") or "").lower()
    assert prefect_health("not a url") is not None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_work_pool_deployment_takes_its_schedule_from_settings(tmp_path: Path, monkeypatch) -> None:
    """`[schedule] work_pool` set: `churnflow schedule` registers the deployment on the pool with
    the cron, time zone and name of [schedule] (no second copy of the cron anywhere)."""
    from churnflow.features.settings import load_settings

    pool = "churnflow-test-pool"
    toml = SCHEDULE_TOML.replace('"0 6 * * 1"', '"30 7 * * 2"') + f'work_pool = "{pool}"\n'
    config = write_project(tmp_path, n_customers=0, extra_toml=toml)
    quiet = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_HOME": str(tmp_path / "prefect_home")}
    for key, value in quiet.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHURNFLOW_"))}
    env |= quiet | {"PYTHONPATH": str(CODE_ROOT)}
    assert load_settings(config).schedule.work_pool == pool

    with local_prefect_server(port=_free_port(), timeout=90) as api_url:
        env["PREFECT_API_URL"] = api_url
        missing = subprocess.run([CHURNFLOW, "schedule", "--config", str(config)], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert missing.returncode != 0
        assert f"prefect work-pool create {pool} --type process" in missing.stdout + missing.stderr

        _api(api_url, "POST", "/work_pools/", {"name": pool, "type": "process"})
        for _ in range(2):  # rerunning updates the one deployment in place
            done = subprocess.run([CHURNFLOW, "schedule", "--config", str(config)], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        deployment = _api(api_url, "GET", f"/deployments/name/score/{DEPLOYMENT}")
        found = _api(api_url, "POST", "/deployments/filter", {})

    assert [d["id"] for d in found] == [deployment["id"]]
    (schedule,) = [s["schedule"] for s in deployment["schedules"]]
    assert (schedule["cron"], schedule["timezone"]) == ("30 7 * * 2", TZ)
    assert deployment["work_pool_name"] == pool
    assert deployment["parameters"]["config"] == str(config.resolve())
    assert deployment["entrypoint"] == "flows/score_flow.py:score_flow"
    assert str(CODE_ROOT) in json.dumps(deployment["pull_steps"])
