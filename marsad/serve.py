"""`marsad serve`: Marsad's schedules in one process, the embedded way to run unattended.

Prefect's ``serve`` needs a real API server (against the temporary one it schedules nothing), so
when no Prefect API URL is configured (environment or Prefect profile) a local ``prefect server
start`` is launched on a free loopback port, waited for, and stopped with Marsad.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from datetime import UTC, datetime, timedelta

from marsad.config import Settings
from marsad.errors import ConfigError

SERVER_START_TIMEOUT = 90.0  # seconds; measured 6-9 s on two cores, much more under load

# Marsad's logging policy for Prefect, as environment variables (set by the `marsad` command, so
# inherited by `marsad serve`'s flow-run processes, and by docker-compose.yml for the worker):
# Prefect's internals (API clients, runners, workers, and the "Finished in state Completed()" line
# of every task run) from WARNING up only; every flow run's INFO lines, where each flow logs its
# run summary, kept in the console and in the UI. The last two override single loggers of
# Prefect's logging.yml (PREFECT_LOGGING_<path to the key>).
PREFECT_LOG_LEVELS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Schedules:
    """What ``serve`` runs, in the analysts' time zone."""

    ingest_minutes: int
    digest_time: str  # HH:MM
    alert_minutes: int
    timezone: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Schedules:
        return cls(
            settings.serve_ingest_minutes,
            settings.serve_digest_time,
            settings.serve_alert_minutes,
            settings.timezone,
        )

    @property
    def digest_cron(self) -> str:
        hour, minute = (int(part) for part in self.digest_time.split(":"))
        return f"{minute} {hour} * * *"


def deployments(schedules: Schedules, start: datetime | None = None) -> list:
    """The flows as served deployments: one run at a time each (an overlapping run is cancelled).

    The ingest runs every ``ingest_minutes`` from ``start`` (now); the spike alert every
    ``alert_minutes`` from half an ingest interval later, so that it finds the articles of the
    ingest before it (with the defaults, a quarter of an hour after each ingest, as prefect.yaml).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval

    from flows.backfill import backfill
    from flows.digest import digest
    from flows.ingest import ingest
    from flows.retag import retag
    from flows.spike_alert import spike_alert

    ingest_every = timedelta(minutes=schedules.ingest_minutes)
    start = start or datetime.now(UTC)
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return [
        ingest.to_deployment(
            "ingest",
            schedules=[Interval(ingest_every, anchor_date=start, timezone=schedules.timezone)],
            concurrency_limit=one_at_a_time,
            description="Poll the due feeds and store their new articles.",
        ),
        digest.to_deployment(
            "digest",
            schedules=[Cron(schedules.digest_cron, timezone=schedules.timezone)],
            concurrency_limit=one_at_a_time,
            description="The daily digest for every recipient.",
        ),
        spike_alert.to_deployment(
            "spike-alert",
            schedules=[Interval(
                timedelta(minutes=schedules.alert_minutes),
                anchor_date=start + ingest_every / 2,
                timezone=schedules.timezone,
            )],
            concurrency_limit=one_at_a_time,
            description="Mail at once the followers of a topic that spikes today.",
        ),
        retag.to_deployment(
            "retag",
            concurrency_limit=one_at_a_time,
            description="Re-tag stored articles after a taxonomy change (run on demand).",
        ),
        backfill.to_deployment(
            "backfill",
            concurrency_limit=one_at_a_time,
            description="Store a site's history from a news sitemap or a list of URLs (run on demand).",
        ),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def configured_api_url() -> str | None:
    """The Prefect API URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prefect_server(home: Path, log: Path) -> Iterator[str]:
    """A local Prefect server on a free loopback port for the duration of the block; its URL."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": api_url,
    }
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches Marsad, which then stops the server itself
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _healthy(api_url):
            if server.poll() is not None:
                raise ConfigError(f"the local Prefect server exited at start; see {log}")
            if time.monotonic() > deadline:
                raise ConfigError(f"the local Prefect server did not start in {SERVER_START_TIMEOUT:.0f} s; see {log}")
            time.sleep(0.5)
        yield api_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
