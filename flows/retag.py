"""The retag flow: re-tag stored articles with the current taxonomy, batch by batch.

One task per batch of articles (tag and write in one transaction), so a retag of a large archive
costs the Prefect server a few hundred task runs, not one per article.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from marsad import retag as retagging
from marsad.artifacts import flow_artifact, retag_markdown
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
    with flow_artifact("retag-summary", "Retag") as artifact:
        version = get_tagger().version
        total = retagging.RetagReport()
        # Shown as it grows: a run that fails midway still counts the batches it wrote.
        artifact.show(lambda: retag_markdown(total, version))
        ensure_schema(get_engine(get_settings().database_url))
        while (batch := retag_batch(total.last_id, since)).articles_checked:
            total.add(batch)
        line = total.as_log_line(version)
        get_run_logger().info(line)
        artifact.description = line
        return total
