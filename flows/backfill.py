"""The backfill flow: discover → (claim → fetch pages → extract → tag → store) per batch.

The page loop is the ingest's, with its tasks, except that it claims only the pages a backfill
discovered (the ingest never claims those) and that page fetches keep
MARSAD_BACKFILL_HOST_INTERVAL between two requests to one host: a backfill asks one site for its
whole archive. Discovered URLs are durable pending rows, so an interrupted backfill is resumed by
running it again; caching is off, as in the ingest, and idempotency lives in the database.
"""

from __future__ import annotations

import time
from datetime import date

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from flows.ingest import DB_RETRIES, extract_pages, store_articles, tag_articles
from marsad import backfill as backfilling
from marsad import ingest as stages
from marsad.artifacts import flow_artifact
from marsad.config import get_settings
from marsad.db import ensure_schema, get_engine
from marsad.extract import shared_pool
from marsad.fetch import HostSpacing
from marsad.store import PendingArticle


# No retries: discovery is idempotent, but a malformed sitemap or a refused address would only
# fail again, later; after a database outage, running the backfill again picks up where it was.
@task(cache_policy=NO_CACHE)
def discover(
    source: str, since: date | None, until: date | None, spacing: HostSpacing
) -> backfilling.DiscoveryReport:
    engine = get_engine(get_settings().database_url)
    ensure_schema(engine)
    return backfilling.discover(engine, get_settings(), source, since, until, spacing=spacing)


@task(cache_policy=NO_CACHE, **DB_RETRIES)
def claim_pages() -> list[PendingArticle]:
    # Only the pages a backfill discovered: the ingest leaves them alone, so every request to
    # their site keeps the backfill's pause.
    return stages.claim_pages(get_engine(get_settings().database_url), get_settings(), backfilled=True)


@task(cache_policy=NO_CACHE)
def fetch_pages(pending: list[PendingArticle], spacing: HostSpacing) -> list[stages.PageFetch]:
    return stages.fetch_pages(get_settings(), pending, spacing)


@flow(name="backfill")
def backfill(
    source: str, since: date | None = None, until: date | None = None
) -> backfilling.BackfillSummary:
    """Store the pages a sitemap (or a file of URLs) lists for the days from ``since`` to
    ``until`` (in MARSAD_TIMEZONE, both included), clean and tagged, as the ingest stores them."""
    with flow_artifact("backfill-summary", f"Backfill of {source}") as artifact:
        settings = get_settings()
        started = time.monotonic()
        # One spacing for the whole run: sitemaps, then every batch of pages, one pause apart.
        spacing = HostSpacing(settings.backfill_host_interval)
        discovery = discover(source, since, until, spacing)
        pool = shared_pool(
            settings.extract_workers, settings.extract_timeout, settings.extract_max_bytes
        )
        stored: list[stages.StoreReport] = []
        # Shown as it grows: a run that fails midway still counts the pages it stored.
        artifact.show(lambda: backfilling.BackfillSummary.of(
            discovery, stored, time.monotonic() - started
        ).as_markdown())
        # As in the ingest, a batch extracts in the background while the next one is fetched.
        extracting: PrefectFuture | None = None
        while pending := claim_pages():
            fetched = fetch_pages(pending, spacing)
            next_batch = extract_pages.submit(pool, fetched)
            if extracting is not None:
                stored.append(store_articles(tag_articles(extracting.result())))
            extracting = next_batch
        if extracting is not None:
            stored.append(store_articles(tag_articles(extracting.result())))
        summary = backfilling.BackfillSummary.of(discovery, stored, time.monotonic() - started)
        get_run_logger().info(summary.as_log_line())
        artifact.show(summary.as_markdown, summary.as_log_line())
        return summary
