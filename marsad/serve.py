"""`marsad serve`: Marsad's schedules in one process, the embedded way to run unattended.

Prefect's ``serve`` needs a real API server (against the temporary one it schedules nothing), so
when no ``PREFECT_API_URL`` is configured a local ``prefect server start`` is launched on a free
loopback port, waited for, and stopped with Marsad.
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

import httpx

from marsad.config import Settings
from marsad.errors import ConfigError

SERVER_START_TIMEOUT = 90.0  # seconds; measured 6-9 s on two cores, much more under load


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


def deployments(schedules: Schedules) -> list:
    """The flows as served deployments: one run at a time each (an overlapping run is cancelled)."""
    from datetime import timedelta

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval

    from flows.backfill import backfill
    from flows.digest import digest
    from flows.ingest import ingest
    from flows.retag import retag
    from flows.spike_alert import spike_alert

    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return [
        ingest.to_deployment(
            "ingest",
            schedules=[Interval(timedelta(minutes=schedules.ingest_minutes), timezone=schedules.timezone)],
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
            schedules=[Interval(timedelta(minutes=schedules.alert_minutes), timezone=schedules.timezone)],
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


def _healthy(api_url: str) -> bool:
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
