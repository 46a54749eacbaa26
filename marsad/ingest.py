"""The ingest stages, one function each; ``flows/ingest.py`` runs them in order as Prefect tasks.

poll (fetch feed bytes) → parse → record new items (with the feed's validators, in one transaction)
→ claim pages → fetch pages → extract → tag → store. Each stage is testable without Prefect.
A feed's new items are stored as pending rows before any page is fetched, so a crash anywhere
loses nothing: the next run finds the pending rows and carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, update

from marsad import store
from marsad.config import Settings
from marsad.db import session_scope
from marsad.errors import FeedParseError, InputError
from marsad.extract import ExtractedPage, ExtractorPool, detect_language
from marsad.feeds import FeedItem, canonical_url, parse_feed
from marsad.fetch import Fetcher, FetchResult, FetchStatus
from marsad.progress import report_progress
from marsad.tagging import TagResult, get_tagger
from models import Article, DateSource, ExtractionStatus, Feed, IngestRun, RunStatus

FEED_LEASE = timedelta(minutes=10)
PAGE_LEASE = timedelta(minutes=10)
PAGE_BATCH = 200
MAX_PAGE_ATTEMPTS = 3
# A date this far ahead of the fetch is a publisher's mistake, not a scheduled story.
FUTURE_TOLERANCE = timedelta(days=1)
# HTTP statuses that mean the page is gone for good: keep the feed's summary, never refetch.
GONE_STATUSES = {404, 410}
PERMANENT_REASONS = {"blocked_address", "bad_scheme", "bad_url"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Runs ----------------------------------------------------------------------------------------


def open_run(engine: Engine, flow_run_id: str | None = None) -> int:
    with session_scope(engine) as session:
        return store.start_run(session, now=utcnow(), flow_run_id=flow_run_id)


# Poll ----------------------------------------------------------------------------------------


@dataclass
class FeedPoll:
    feed: store.ClaimedFeed
    result: FetchResult


def poll_feeds(
    engine: Engine, settings: Settings, feed_urls: Sequence[str] | None = None
) -> list[FeedPoll]:
    """Claim the feeds due now (or ``feed_urls``) and fetch them concurrently, politely."""
    if feed_urls:
        check_feeds_registered(engine, feed_urls)
    now = utcnow()
    with session_scope(engine) as session:
        claimed = store.claim_feeds(
            session, now=now, lease_until=now + FEED_LEASE, urls=feed_urls
        )
    if not claimed:
        return []
    results = asyncio.run(_fetch_all(settings, claimed, conditional=True))
    return [FeedPoll(feed, result) for feed, result in zip(claimed, results, strict=True)]


def check_feeds_registered(engine: Engine, feed_urls: Sequence[str]) -> None:
    with session_scope(engine) as session:
        known = store.feeds_by_url(session, feed_urls)
    unknown = [url for url in feed_urls if url not in known]
    if unknown:
        raise InputError(
            f"feed not registered: {', '.join(unknown)} (add it with `marsad feeds add`)"
        )


async def _fetch_all(
    settings: Settings, feeds: Sequence[store.ClaimedFeed], *, conditional: bool
) -> list[FetchResult]:
    async with Fetcher.from_settings(settings) as fetcher:
        done = 0

        async def one(feed: store.ClaimedFeed) -> FetchResult:
            nonlocal done
            result = await fetcher.fetch(
                feed.url,
                etag=feed.etag if conditional else None,
                last_modified=feed.last_modified if conditional else None,
            )
            done += 1
            report_progress("poll feeds", done, len(feeds))
            return result

        return await asyncio.gather(*(one(feed) for feed in feeds))


# Parse ---------------------------------------------------------------------------------------


@dataclass
class FeedOutcome:
    """What one poll of one feed came to; stored by ``record_feeds``."""

    feed: store.ClaimedFeed
    result: FetchResult
    status: str  # "ok" | "unchanged" | "not_modified" | "failed"
    items: list[FeedItem] = field(default_factory=list)
    body_hash: str | None = None
    reason: str | None = None
    error: str | None = None
    recovered_error: str | None = None
    item_failures: Counter[str] = field(default_factory=Counter)


def parse_feeds(polls: Sequence[FeedPoll]) -> list[FeedOutcome]:
    return [parse_poll(poll) for poll in polls]


def parse_poll(poll: FeedPoll) -> FeedOutcome:
    result = poll.result
    if result.status == FetchStatus.NOT_MODIFIED:
        return FeedOutcome(poll.feed, result, "not_modified", body_hash=poll.feed.body_hash)
    if not result.ok:
        return FeedOutcome(
            poll.feed, result, "failed", reason=result.reason, error=result.error
        )
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == poll.feed.body_hash:
        # Same bytes as last time, although the server ignored our validators: skip parsing.
        return FeedOutcome(poll.feed, result, "unchanged", body_hash=body_hash)
    try:
        parsed = parse_feed(result.body, result.final_url, result.content_type)
    except FeedParseError as exc:
        return FeedOutcome(poll.feed, result, "failed", reason=exc.reason, error=str(exc))
    return FeedOutcome(
        poll.feed,
        result,
        "ok",
        items=parsed.items,
        body_hash=body_hash,
        recovered_error=parsed.recovered_error,
        item_failures=parsed.skipped,
    )


# Record --------------------------------------------------------------------------------------


@dataclass
class RecordReport:
    feeds_ok: int = 0
    feeds_unchanged: int = 0
    feeds_failed: int = 0
    articles_new: int = 0
    failures: Counter[str] = field(default_factory=Counter)


def record_feeds(
    engine: Engine, settings: Settings, run_id: int, outcomes: Sequence[FeedOutcome]
) -> RecordReport:
    """Store each feed's new items together with its validators and fetch event.

    One transaction per feed: the validators never say "seen" for items that were not stored.
    """
    report = RecordReport()
    # A retried task must not record a feed twice (its error count, its fetch event).
    with session_scope(engine) as session:
        recorded = store.feeds_recorded_in_run(session, run_id)
    for outcome in outcomes:
        if outcome.feed.id in recorded:
            continue
        now = utcnow()
        with session_scope(engine) as session:
            new_count = _record_one(session, settings, run_id, outcome, now)
        report.articles_new += new_count
        if outcome.status == "failed":
            report.feeds_failed += 1
            report.failures[f"feed:{outcome.reason or 'error'}"] += 1
        elif outcome.status == "ok":
            report.feeds_ok += 1
        else:
            report.feeds_unchanged += 1
        for reason, count in outcome.item_failures.items():
            report.failures[f"item:{reason}"] += count
    return report


def _record_one(
    session: Any, settings: Settings, run_id: int, outcome: FeedOutcome, now: datetime
) -> int:
    feed, result = outcome.feed, outcome.result
    new_ids: list[int] = []
    if outcome.items:
        rows = _article_rows(feed.id, outcome.items, now, outcome.item_failures)
        if rows:
            inserted = session.execute(
                store.insert_ignoring_conflicts(session, Article).returning(Article.id), rows
            )
            new_ids = list(inserted.scalars())

    values: dict[str, Any] = {"last_fetched_at": now, "last_status": outcome.status}
    if outcome.status == "failed":
        error_count = feed.error_count + 1
        values |= {
            "error_count": error_count,
            "last_error": store.scrub_inline(outcome.error, 2000),
            "next_poll_at": next_poll_after_failure(
                now, error_count, result.retry_after, settings
            ),
        }
    else:
        values |= {
            "error_count": 0,
            "last_error": None,
            "last_success_at": now,
            "next_poll_at": _not_before(now, result.retry_after),
            "body_hash": outcome.body_hash,
        }
        if result.status == FetchStatus.OK:
            values |= {"etag": result.etag, "last_modified": result.last_modified}
    session.execute(
        update(Feed).where(Feed.id == feed.id).values(**values),
        execution_options={"synchronize_session": False},
    )
    store.record_fetch_event(
        session,
        run_id=run_id,
        feed_id=feed.id,
        started_at=now - timedelta(seconds=result.elapsed),
        status=outcome.status,
        reason=outcome.reason,
        http_status=result.http_status,
        bytes=len(result.body),
        items_seen=len(outcome.items) + sum(outcome.item_failures.values()),
        items_new=len(new_ids),
        duration_ms=round(result.elapsed * 1000),
        error=store.scrub_inline(outcome.error or outcome.recovered_error, 2000),
        item_failures=dict(outcome.item_failures) or None,
    )
    return len(new_ids)


def _article_rows(
    feed_id: int, items: Sequence[FeedItem], now: datetime, failures: Counter[str]
) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            canonical = canonical_url(item.link)
        except InputError:
            failures["bad_link"] += 1
            continue
        published, source = _feed_date(item.published_at, now)
        if item.published_raw and published is None:
            failures["bad_date"] += 1
        # A feed listing one URL twice keeps the first; the database drops URLs already known.
        rows.setdefault(
            canonical,
            {
                "canonical_url": canonical,
                "url": store.scrub(item.link)[:2048],
                "guid": store.scrub_inline(item.guid, 2048),
                "feed_id": feed_id,
                "title": store.scrub_inline(item.title),
                "summary": store.scrub(item.summary),
                "text": store.scrub(item.summary),
                "author": store.scrub_inline(item.author, 512),
                "published_at": published,
                "date_source": source,
                "discovered_at": now,
                "extraction_status": ExtractionStatus.PENDING,
                "fetch_attempts": 0,
            },
        )
    return list(rows.values())


def _feed_date(value: datetime | None, now: datetime) -> tuple[datetime | None, str | None]:
    if value is None or value > now + FUTURE_TOLERANCE:
        return None, None
    return value, DateSource.FEED


def _not_before(now: datetime, retry_after: float | None) -> datetime:
    return now + timedelta(seconds=retry_after) if retry_after else now


def next_poll_after_failure(
    now: datetime, error_count: int, retry_after: float | None, settings: Settings
) -> datetime:
    """Exponential backoff per consecutive failure, capped; never sooner than Retry-After."""
    backoff = timedelta(minutes=settings.backoff_base_minutes) * (2 ** min(error_count - 1, 16))
    backoff = min(backoff, timedelta(hours=settings.backoff_max_hours))
    return max(now + backoff, _not_before(now, retry_after))


# Pages ---------------------------------------------------------------------------------------


def claim_pages(engine: Engine, limit: int = PAGE_BATCH) -> list[store.PendingArticle]:
    now = utcnow()
    with session_scope(engine) as session:
        return store.claim_pages(
            session,
            now=now,
            lease_until=now + PAGE_LEASE,
            limit=limit,
            max_attempts=MAX_PAGE_ATTEMPTS,
        )


@dataclass
class PageFetch:
    article: store.PendingArticle
    result: FetchResult


def fetch_pages(settings: Settings, pending: Sequence[store.PendingArticle]) -> list[PageFetch]:
    return asyncio.run(_fetch_pages(settings, pending))


async def _fetch_pages(
    settings: Settings, pending: Sequence[store.PendingArticle]
) -> list[PageFetch]:
    async with Fetcher.from_settings(settings) as fetcher:
        done = 0

        async def one(article: store.PendingArticle) -> PageFetch:
            nonlocal done
            result = await fetcher.fetch(article.url)
            done += 1
            report_progress("fetch pages", done, len(pending))
            return PageFetch(article, result)

        return await asyncio.gather(*(one(article) for article in pending))


@dataclass
class ExtractedArticle:
    article: store.PendingArticle
    result: FetchResult
    page: ExtractedPage | None  # None when the page was not fetched


def extract_pages(pool: ExtractorPool, fetched: Sequence[PageFetch]) -> list[ExtractedArticle]:
    """Extract every fetched page in the process pool; pages that failed to fetch pass through."""
    with_body = [item for item in fetched if item.result.ok]
    pages = pool.extract_many([(item.result.final_url, item.result.body) for item in with_body])
    by_id = {item.article.id: page for item, page in zip(with_body, pages, strict=True)}
    return [ExtractedArticle(item.article, item.result, by_id.get(item.article.id)) for item in fetched]


@dataclass
class ArticleUpdate:
    article_id: int
    values: dict[str, Any]
    tags: TagResult | None = None
    failure: str | None = None  # reason counted in the run summary


def build_update(item: ExtractedArticle, now: datetime) -> ArticleUpdate:
    """Decide what to store for one article from its fetch and extraction. Pure."""
    article, result, page = item.article, item.result, item.page
    values: dict[str, Any] = {
        "fetched_at": now,
        "http_status": result.http_status,
        "fetch_attempts": article.fetch_attempts + 1,
        "next_fetch_at": None,
        "extraction_error": None,
    }
    failure: str | None = None
    if page is not None and page.status == "ok":
        values |= {
            "text": store.scrub(page.text),
            "extraction_status": ExtractionStatus.OK,
            "extraction_method": page.method,
        }
    else:
        # Keep the article with what its feed said; record why the page gave nothing better.
        values |= {"text": article.summary, "extraction_method": "feed_summary"}
        if page is not None:
            status = _page_status(page.status)
            values |= {"extraction_status": status, "extraction_error": page.error}
            failure = f"page:{page.status}"
        elif result.http_status in GONE_STATUSES:
            values |= {"extraction_status": ExtractionStatus.GONE, "extraction_error": result.error}
            failure = f"page:http_{result.http_status}"
        elif result.reason in PERMANENT_REASONS:
            values |= {"extraction_status": ExtractionStatus.BLOCKED, "extraction_error": result.error}
            failure = f"page:{result.reason}"
        else:
            retry_in = timedelta(minutes=30) * (2 ** article.fetch_attempts)
            values |= {
                "extraction_status": ExtractionStatus.FETCH_FAILED,
                "extraction_error": result.error,
                "next_fetch_at": max(now + retry_in, _not_before(now, result.retry_after)),
            }
            failure = f"page:{result.reason or 'error'}"

    if page is not None:
        values |= {
            "author": article.author or store.scrub_inline(page.author, 512),
            "site_name": store.scrub_inline(page.site_name, 300),
        }
        if not article.title and page.title:
            values["title"] = store.scrub_inline(page.title)
    values["title"] = values.get("title", article.title)
    values["extraction_error"] = store.scrub_inline(values["extraction_error"], 2000)
    values |= _dates(article, page, now)
    text = values["text"] or ""
    values["language"] = (
        (page.language if page is not None and page.status == "ok" else None)
        or detect_language(f"{values['title'] or ''}\n{text}")
        or article.feed_language
    )
    values["content_hash"] = content_hash(text) if text else None
    return ArticleUpdate(article.id, values, failure=failure)


def _page_status(status: str) -> ExtractionStatus:
    try:
        return ExtractionStatus(status)
    except ValueError:
        return ExtractionStatus.FAILED


def _dates(
    article: store.PendingArticle, page: ExtractedPage | None, now: datetime
) -> dict[str, Any]:
    if article.date_source == DateSource.FEED and article.published_at is not None:
        return {}
    page_date = page.published_at if page is not None else None
    if page_date is not None and page_date <= now + FUTURE_TOLERANCE:
        return {"published_at": page_date, "date_source": DateSource.PAGE}
    return {"published_at": article.discovered_at, "date_source": DateSource.FETCHED}


def content_hash(text: str) -> str:
    """Hash of the text with whitespace and case folded: equal for copies of one text."""
    return hashlib.sha256(" ".join(text.casefold().split()).encode()).hexdigest()


def tag_articles(extracted: Sequence[ExtractedArticle]) -> list[ArticleUpdate]:
    now = utcnow()
    tagger = get_tagger()
    updates = []
    for item in extracted:
        update_ = build_update(item, now)
        update_.tags = tagger.tag(
            update_.values["title"], update_.values["text"], update_.values["language"]
        )
        updates.append(update_)
    return updates


@dataclass
class StoreReport:
    stored: int = 0
    failures: Counter[str] = field(default_factory=Counter)


def store_articles(engine: Engine, updates: Sequence[ArticleUpdate]) -> StoreReport:
    report = StoreReport()
    now = utcnow()
    tagger_version = get_tagger().version
    with session_scope(engine) as session:
        for item in updates:
            values = dict(item.values)
            if item.tags is not None:
                values["places"] = list(item.tags.places)
                values["actors"] = list(item.tags.actors)
            session.execute(
                update(Article).where(Article.id == item.article_id).values(**values),
                execution_options={"synchronize_session": False},
            )
            if item.tags is not None:
                store.save_tags(
                    session,
                    item.article_id,
                    item.tags.to_dict()["topics"],
                    tagger_version,
                    now,
                )
            report.stored += 1
            if item.failure:
                report.failures[item.failure] += 1
    return report


# Finish --------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    run_id: int
    status: str
    feeds_polled: int
    feeds_ok: int
    feeds_unchanged: int
    feeds_failed: int
    articles_new: int
    articles_stored: int
    failures: dict[str, int]
    failed_feeds: list[tuple[str, str]]  # (url, error)
    duration_s: float

    def as_markdown(self) -> str:
        lines = [
            f"# Ingest run {self.run_id}: {self.status}",
            "",
            "| feeds polled | ok | unchanged | failed | new articles | pages stored | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.feeds_polled} | {self.feeds_ok} | {self.feeds_unchanged} "
            f"| {self.feeds_failed} | {self.articles_new} | {self.articles_stored} "
            f"| {self.duration_s:.1f} |",
        ]
        if self.failures:
            lines += ["", "| failure | count |", "|---|---:|"]
            lines += [f"| {_md(reason)} | {count} |" for reason, count in sorted(self.failures.items())]
        if self.failed_feeds:
            lines += ["", "| failed feed | error |", "|---|---|"]
            lines += [f"| {_md(url)} | {_md(error)} |" for url, error in self.failed_feeds]
        return "\n".join(lines)

    def as_log_line(self) -> str:
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failures.items())) or "none"
        return (
            f"run {self.run_id} {self.status}: {self.feeds_polled} feeds polled "
            f"({self.feeds_ok} ok, {self.feeds_unchanged} unchanged, {self.feeds_failed} failed), "
            f"{self.articles_new} new articles, {self.articles_stored} pages stored; "
            f"failures: {failures}"
        )


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def finish_run(
    engine: Engine,
    run_id: int,
    outcomes: Sequence[FeedOutcome],
    record: RecordReport,
    stored: Sequence[StoreReport],
    *,
    status: RunStatus = RunStatus.COMPLETED,
    error: str | None = None,
) -> RunSummary:
    failures = Counter(record.failures)
    for report in stored:
        failures.update(report.failures)
    now = utcnow()
    with session_scope(engine) as session:
        run = session.get(IngestRun, run_id)
        assert run is not None, "the run row is created before any stage"
        run.finished_at = now
        run.status = status
        run.feeds_polled = len(outcomes)
        run.feeds_ok = record.feeds_ok
        run.feeds_unchanged = record.feeds_unchanged
        run.feeds_failed = record.feeds_failed
        run.articles_new = record.articles_new
        run.articles_stored = sum(report.stored for report in stored)
        run.failures = dict(failures) or None
        run.error = store.scrub_inline(error, 2000)
        started = run.started_at
    return RunSummary(
        run_id=run_id,
        status=str(status),
        feeds_polled=len(outcomes),
        feeds_ok=record.feeds_ok,
        feeds_unchanged=record.feeds_unchanged,
        feeds_failed=record.feeds_failed,
        articles_new=record.articles_new,
        articles_stored=sum(report.stored for report in stored),
        failures=dict(failures),
        failed_feeds=[
            (o.feed.url, o.error or o.reason or "error") for o in outcomes if o.status == "failed"
        ],
        duration_s=(now - started).total_seconds(),
    )
