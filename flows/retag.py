"""The retag flow: re-tag stored articles with the current taxonomy, batch by batch.

One task per batch of articles (tag and write in one transaction), so a retag of a large archive
costs the Prefect server a few hundred task runs, not one per article.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from marsad import retag as retagging
from marsad.config import get_settings
from marsad.db import ensure_schema, get_engine
from marsad.tagging import get_tagger


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def retag_batch(after_id: int, since: datetime | None) -> retagging.RetagReport:
    engine = get_engine(get_settings().database_url)
    return retagging.retag_batch(engine, get_tagger(), after_id=after_id, since=since)


@flow(name="retag")
def retag(since: datetime | None = None) -> retagging.RetagReport:
    """Re-tag articles dated ``since`` or later (all when None); only changes are written."""
    ensure_schema(get_engine(get_settings().database_url))
    total = retagging.RetagReport()
    while (batch := retag_batch(total.last_id, since)).articles_checked:
        total.add(batch)
    line = total.as_log_line(get_tagger().version)
    get_run_logger().info(line)
    create_markdown_artifact(key="retag-summary", markdown=f"# Retag\n\n{line}", description=line)
    return total
