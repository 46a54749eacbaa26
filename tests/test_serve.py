"""`marsad serve`: the schedules served in one process, with its own local Prefect server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
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


def test_serve_starts_a_local_server_serves_the_schedules_runs_a_flow_and_stops_on_ctrl_c(
    tmp_path: Path, http_server: LoopbackServer
) -> None:
    # A feed that answers slowly, so that a second ingest starts while the first still runs.
    http_server.add("/slow.xml", rss("Slow", [Item("Story", http_server.url("/gone.html"), "1")]), delay=8)
    database = f"sqlite:///{tmp_path / 'marsad.db'}"
    engine = make_engine(database)
    upgrade(engine)
    with session_scope(engine) as session:
        add_feeds(session, [FeedSpec(http_server.url("/slow.xml"))])
    engine.dispose()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("MARSAD_", "PREFECT_"))
    } | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MARSAD_DATABASE_URL": database,
        "MARSAD_ALLOW_HOSTS": "127.0.0.1",
        "MARSAD_TIMEZONE": "Asia/Baghdad",
        "MARSAD_SERVE_DIGEST_TIME": "06:30",
        "DO_NOT_TRACK": "1",
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "marsad.cli", "serve"], env=env, cwd=tmp_path,
            stdout=output, stderr=subprocess.STDOUT,
        )
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
        assert deployments["ingest"]["schedules"][0]["schedule"]["interval"] == 1800.0
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
