"""The ingest flow: poll → parse → record → (claim → fetch pages → extract → tag → store) per batch.

Tasks are per stage or per batch of pages, never per article: each task run costs the Prefect
server about 20 ms of CPU, more than extracting a page. Task arguments carry bytes and pools, so
caching (which hashes arguments) is off; idempotency lives in the database.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run

from marsad import ingest as stages
from marsad.artifacts import RunReport, feed_rows, feed_table, flow_artifact
from marsad.config import get_settings
from marsad.db import ensure_schema, get_engine
from marsad.extract import ExtractorPool, shared_pool
from marsad.store import PendingArticle
from models import RunStatus

# Database steps retry a brief outage (a PostgreSQL restart, a locked SQLite); each is idempotent:
# feeds already recorded in this run are skipped, stored pages are rewritten whole.
DB_RETRIES = {"retries": 2, "retry_delay_seconds": 5}


def _engine():  # each task builds (or reuses) its engine; engines never travel as arguments
    return get_engine(get_settings().database_url)


@task(cache_policy=NO_CACHE)
def open_run() -> int:
    engine = _engine()
    ensure_schema(engine)
    return stages.open_run(engine, flow_run_id=flow_run.get_id())


@task(cache_policy=NO_CACHE)
def poll_feeds(feed_urls: list[str] | None) -> list[stages.FeedPoll]:
    return stages.poll_feeds(_engine(), get_settings(), feed_urls)


@task(cache_policy=NO_CACHE)
def parse_feeds(polls: list[stages.FeedPoll]) -> list[stages.FeedOutcome]:
    return stages.parse_feeds(polls)


@task(cache_policy=NO_CACHE, **DB_RETRIES)
def record_feeds(run_id: int, outcomes: list[stages.FeedOutcome]) -> stages.RecordReport:
    return stages.record_feeds(_engine(), get_settings(), run_id, outcomes)


@task(cache_policy=NO_CACHE, **DB_RETRIES)
def claim_pages() -> list[PendingArticle]:
    return stages.claim_pages(_engine(), get_settings())


@task(cache_policy=NO_CACHE)
def fetch_pages(pending: list[PendingArticle]) -> list[stages.PageFetch]:
    return stages.fetch_pages(get_settings(), pending)


@task(cache_policy=NO_CACHE)
def extract_pages(pool: ExtractorPool, fetched: list[stages.PageFetch]) -> list[stages.ArticleUpdate]:
    return stages.extract_pages(pool, get_settings(), fetched)


@task(cache_policy=NO_CACHE)
def tag_articles(updates: list[stages.ArticleUpdate]) -> list[stages.ArticleUpdate]:
    return stages.tag_articles(updates)


@task(cache_policy=NO_CACHE, **DB_RETRIES)
def store_articles(updates: list[stages.ArticleUpdate]) -> stages.StoreReport:
    return stages.store_articles(_engine(), get_settings(), updates)


@flow(name="ingest")
def ingest(feed_urls: list[str] | None = None) -> stages.RunSummary:
    """Poll the due feeds (or only ``feed_urls``) and store their new articles, clean and tagged."""
    with flow_artifact("ingest-summary", "Ingest run") as artifact:
        settings = get_settings()
        run_id = open_run()
        clock = stages.StageClock()
        outcomes: list[stages.FeedOutcome] = []
        record = stages.RecordReport()
        stored: list[stages.StoreReport] = []
        try:
            polls = clock.run("poll", poll_feeds, feed_urls)
            outcomes = clock.run("parse", parse_feeds, polls)
            record = clock.run("record", record_feeds, run_id, outcomes)
            pool = shared_pool(
                settings.extract_workers, settings.extract_timeout, settings.extract_max_bytes
            )
            # A batch extracts in the background while the flow fetches the next one and stores
            # the one before: the extraction workers, the run's bottleneck, never wait for the rest.
            extracting = None
            while pending := clock.run("claim", claim_pages):
                fetched = clock.run("fetch", fetch_pages, pending)
                next_batch = extract_pages.submit(pool, fetched)
                if extracting is not None:
                    stored.append(_tag_and_store(clock, extracting))
                extracting = next_batch
            if extracting is not None:
                stored.append(_tag_and_store(clock, extracting))
        except Exception as exc:
            try:
                _report(artifact, stages.finish_run(
                    _engine(), run_id, outcomes, record, stored,
                    status=RunStatus.FAILED, error=str(exc), stage_seconds=clock.seconds,
                ))
            except Exception:  # noqa: BLE001 - the database may be what failed; its error is the one to raise
                get_run_logger().exception("the failed run could not be recorded")
            raise
        return _report(
            artifact,
            stages.finish_run(_engine(), run_id, outcomes, record, stored, stage_seconds=clock.seconds),
        )


def _tag_and_store(clock: stages.StageClock, extracting: PrefectFuture) -> stages.StoreReport:
    updates = clock.run("wait for extraction", extracting.result)
    return clock.run("store", store_articles, clock.run("tag", tag_articles, updates))


def _report(artifact: RunReport, summary: stages.RunSummary) -> stages.RunSummary:
    """The run's summary in the log and, with a line per feed, in the flow run's artifact."""
    logger = get_run_logger()
    (logger.info if summary.status == RunStatus.COMPLETED else logger.error)(summary.as_log_line())
    try:
        feeds = feed_table(feed_rows(_engine(), summary.run_id))
    except Exception:  # noqa: BLE001 - the totals (and the failed feeds) are shown without it
        logger.warning("the per-feed table could not be read", exc_info=True)
        feeds = []
    artifact.show(lambda: summary.as_markdown(feeds), summary.as_log_line())
    return summary
