"""The digest flow: prepare each recipient's digest for the day, then deliver what is undelivered.

Retries are safe: a digest is stored once per recipient and day, and a delivery is claimed in the
database before it is sent, so a retried task or an overlapping run never sends one digest twice.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from marsad import delivery
from marsad.artifacts import delivery_markdown, flow_artifact
from marsad.config import get_settings
from marsad.db import ensure_schema, get_engine


def _engine():
    return get_engine(get_settings().database_url)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def prepare_digests(day: date, to: list[str] | None) -> int:
    engine = _engine()
    ensure_schema(engine)
    return delivery.prepare(engine, get_settings(), day, datetime.now(timezone.utc), to)


@task(cache_policy=NO_CACHE)
def undelivered_digests(to: list[str] | None) -> list[int]:
    return delivery.undelivered(_engine(), to)


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def deliver_digest(digest_id: int) -> delivery.DeliveryReport:
    return delivery.deliver(_engine(), get_settings(), digest_id, datetime.now(timezone.utc))


@flow(name="digest")
def digest(day: date | None = None, to: list[str] | None = None) -> delivery.DigestSummary:
    """Build today's digest (or ``day``'s) for every recipient and deliver every undelivered one."""
    with flow_artifact("digest-summary", "Digest") as artifact:
        day = day or datetime.now(get_settings().tz).date()
        summary = delivery.DigestSummary()
        # Shown as it grows: a run that fails midway still lists what went out.
        artifact.show(lambda: delivery_markdown(f"Digest of {day}", summary, "digests prepared"))
        summary.prepared = prepare_digests(day, to)
        for digest_id in undelivered_digests(to):
            summary.reports.append(deliver_digest(digest_id))
        logger = get_run_logger()
        problems = summary.count("pending") + summary.count("unknown") + summary.count("failed")
        (logger.warning if problems else logger.info)(summary.as_log_line())
        artifact.description = summary.as_log_line()
        return summary
