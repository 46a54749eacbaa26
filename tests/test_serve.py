"""`marsad serve`: the schedules served in one process, with its own local Prefect server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from loopback import LoopbackServer
from marsad.db import make_engine, session_scope, upgrade
from marsad.feeds import FeedSpec
from marsad.store import add_feeds
from webdata import Item, rss


def _wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202 - a tiny poll loop
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A `marsad serve` environment of its own: a migrated SQLite database, no Prefect settings
    but a home (and profiles) of its own."""
    database = f"sqlite:///{tmp_path / 'marsad.db'}"
    engine = make_engine(database)
    upgrade(engine)
    engine.dispose()
    return {
        key: value for key, value in os.environ.items()
        if not key.startswith(("MARSAD_", "PREFECT_"))
    } | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MARSAD_DATABASE_URL": database,
        "DO_NOT_TRACK": "1",
    } | settings


def _start_serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """`marsad serve` in its own process, its console in ``serve.log``."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "marsad.cli", "serve"], env=env, cwd=tmp_path,
            stdout=output, stderr=subprocess.STDOUT,
        )
    return process, log


def test_the_spike_alert_runs_half_an_ingest_interval_after_each_ingest() -> None:
    """As prefect.yaml's crons and docs/operations.md say: a quarter hour after each ingest."""
    from prefect.server.schemas.schedules import IntervalSchedule

    from marsad.serve import Schedules, deployments

    start = datetime(2026, 3, 1, 8, 0, 10, tzinfo=UTC)
    served = {d.name: d for d in deployments(Schedules(30, "07:00", 30, "Asia/Baghdad"), start)}

    def next_runs(name: str) -> list[datetime]:
        """The next runs, as the server's scheduler computes them."""
        (schedule,) = served[name].schedules
        server_schedule = IntervalSchedule(**schedule.schedule.model_dump())
        return [run.astimezone(UTC) for run in asyncio.run(server_schedule.get_dates(n=3, start=start))]

    ingest, alert = next_runs("ingest"), next_runs("spike-alert")
    assert ingest[:2] == [start, start + timedelta(minutes=30)]
    assert [a - i for a, i in zip(alert, ingest, strict=True)] == [timedelta(minutes=15)] * 3
    # Another ingest interval: the alert still comes half of it after each ingest.
    served = {d.name: d for d in deployments(Schedules(10, "07:00", 10, "UTC"), start)}
    assert next_runs("spike-alert")[0] - next_runs("ingest")[0] == timedelta(minutes=5)


def test_serve_uses_the_prefect_server_of_the_active_prefect_profile(tmp_path: Path) -> None:
    """A PREFECT_API_URL set in a Prefect profile counts as configured, as for any Prefect command:
    no local server is started."""
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "remote"\n\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n',
        encoding="utf-8",
    )
    env = _environment(tmp_path, PREFECT_PROFILES_PATH=str(profiles), PREFECT_CLIENT_MAX_RETRIES="0")
    process, log = _start_serve(tmp_path, env)
    try:
        # Nothing listens on port 9: serve names that server, then fails to register with it.
        def chosen() -> str | None:
            text = log.read_text()
            return text if re.search(r"runs, logs and artifacts|starting a local", text) else None

        text = _wait_for(chosen, 120, "serve to choose its Prefect server")
    finally:
        # Ctrl-C, so that a serve that did start a local server (the failure) stops it too.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "runs, logs and artifacts: http://127.0.0.1:9 " in text, text[-2000:]
    assert "starting a local Prefect server" not in text


def test_serve_starts_a_local_server_serves_the_schedules_runs_a_flow_and_stops_on_ctrl_c(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    # A feed that answers slowly, so that a second ingest starts while the first still runs.
    http_server.add("/slow.xml", rss("Slow", [Item("Story", http_server.url("/gone.html"), "1")]), delay=8)
    env = _environment(
        tmp_path,
        MARSAD_ALLOW_HOSTS="127.0.0.1",
        MARSAD_TIMEZONE="Asia/Baghdad",
        MARSAD_SERVE_DIGEST_TIME="06:30",
        # The shortest interval: a scheduled ingest comes due a minute after serve has started.
        MARSAD_SERVE_INGEST_MINUTES="1",
    )
    engine = make_engine(env["MARSAD_DATABASE_URL"])
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(http_server.url("/slow.xml"))])
    engine.dispose()
    process, log = _start_serve(tmp_path, env)
    try:
        match = _wait_for(
            lambda: re.search(r"runs, logs and artifacts: (http://127\.0\.0\.1:\d+)", log.read_text()),
            180, "serve to start",
        )
        api = match.group(1) + "/api"

        def served() -> list[dict]:
            found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
            return found if len(found) == 5 else []

        deployments = {d["name"]: d for d in _wait_for(served, 60, "the five deployments")}
        assert set(deployments) == {"ingest", "digest", "spike-alert", "retag", "backfill"}
        digest_schedule = deployments["digest"]["schedules"][0]["schedule"]
        assert digest_schedule["cron"] == "30 6 * * *" and digest_schedule["timezone"] == "Asia/Baghdad"
        ingest_schedule = deployments["ingest"]["schedules"][0]["schedule"]
        alert_schedule = deployments["spike-alert"]["schedules"][0]["schedule"]
        assert ingest_schedule["interval"] == 60.0 and alert_schedule["interval"] == 1800.0
        anchors = [datetime.fromisoformat(s["anchor_date"]) for s in (ingest_schedule, alert_schedule)]
        assert anchors[1] - anchors[0] == timedelta(seconds=30)  # half an ingest interval later
        assert deployments["retag"]["schedules"] == deployments["backfill"]["schedules"] == []
        for deployment in deployments.values():
            assert deployment["global_concurrency_limit"]["limit"] == 1
            assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

        # The server's scheduler plans the coming runs (it does not on SQLAlchemy 2.1).
        def planned() -> list[dict]:
            return httpx.post(f"{api}/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployments["digest"]["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            }, timeout=10).json()

        first_digest = _wait_for(planned, 90, "scheduled digest runs")[0]
        assert first_digest["expected_start_time"].endswith(("03:30:00Z", "03:30:00+00:00"))  # 06:30 Baghdad

        # Two ingests at once: the served process runs one and the second is refused.
        ingest_id = deployments["ingest"]["id"]
        runs = [
            httpx.post(f"{api}/deployments/{ingest_id}/create_flow_run", json={}, timeout=10).json()
            for _ in range(2)
        ]

        def finished(run: dict) -> str | None:
            state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state"]["type"]
            return state if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        outcomes = sorted(_wait_for(lambda run=run: finished(run), 150, "an ingest run") for run in runs)
        assert outcomes == ["CANCELLED", "COMPLETED"]
        assert len(http_server.requests_for("/slow.xml")) == 1

        # The schedule itself starts an ingest (one that comes due while the one above still
        # runs is cancelled; the next, a minute later, runs).
        def scheduled_run() -> dict | None:
            completed = httpx.post(f"{api}/flow_runs/filter", json={
                "deployments": {"id": {"any_": [ingest_id]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            }, timeout=10).json()
            return next((run for run in completed if run["auto_scheduled"]), None)

        scheduled = _wait_for(scheduled_run, 150, "a scheduled ingest run to complete")
        assert scheduled["id"] not in {run["id"] for run in runs}

        # Its log, in the UI and on serve's console: the run summary (INFO), but not Prefect's
        # per-task "Finished in state" lines.
        def logs() -> list[dict]:
            found = httpx.post(f"{api}/logs/filter", json={
                "logs": {"flow_run_id": {"any_": [scheduled["id"]]}},
            }, timeout=10).json()
            return found if any(re.match(r"run \d+ completed: ", log["message"]) for log in found) else []

        messages = _wait_for(logs, 60, "the scheduled run's summary in its logs")
        assert not [m for m in messages if m["task_run_id"] and "Finished in state" in m["message"]]
        console = log.read_text()
        assert re.search(r"run \d+ completed: \d+ feeds polled", console)
        assert not re.search(r"Task run '[^']+' - Finished in state", console)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log.read_text()[-2000:]
    assert "stopped" in log.read_text()
    with pytest.raises(httpx.HTTPError):  # the local server went with it
        httpx.get(f"{api}/health", timeout=2)
