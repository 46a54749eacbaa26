"""The spike-alert flow: when a topic spikes today, mail its followers at once.

Run it after each ingest (or on its own schedule). An alert is stored once per recipient, topic and
day and goes out through the digest's delivery path, so reruns and retries never send it twice.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from marsad import delivery
from marsad.artifacts import delivery_markdown, flow_artifact
from marsad.config import get_settings
from marsad.db import ensure_schema, get_engine


def _engine():
    return get_engine(get_settings().database_url)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def prepare_alerts(to: list[str] | None) -> int:
    engine = _engine()
    ensure_schema(engine)
    return delivery.prepare_alerts(engine, get_settings(), datetime.now(timezone.utc), to)


@task(cache_policy=NO_CACHE)
def undelivered(to: list[str] | None) -> list[int]:
    return delivery.undelivered(_engine(), to)


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def deliver(digest_id: int) -> delivery.DeliveryReport:
    return delivery.deliver(_engine(), get_settings(), digest_id, datetime.now(timezone.utc))


@flow(name="spike-alert")
def spike_alert(to: list[str] | None = None) -> delivery.DigestSummary:
    """Alert the followers of every topic that spikes today; deliver anything still undelivered."""
    with flow_artifact("spike-alert-summary", "Spike alert") as artifact:
        summary = delivery.DigestSummary()
        artifact.show(lambda: delivery_markdown("Spike alert", summary, "alerts prepared"))
        summary.prepared = prepare_alerts(to)
        for digest_id in undelivered(to):
            summary.reports.append(deliver(digest_id))
        line = summary.as_log_line().replace("digests prepared", "alerts prepared")
        get_run_logger().info(line)
        artifact.description = line
        return summary
