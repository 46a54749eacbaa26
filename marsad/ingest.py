"""The ingest stages, one function each; ``flows/ingest.py`` runs them in order as Prefect tasks.

poll (fetch feed bytes) → parse → record new items (with the feed's validators, in one transaction)
→ claim pages → fetch pages → extract → tag → store. Each stage is testable without Prefect.
A feed's new items are stored as pending rows before any page is fetched, so a crash anywhere
loses nothing: the next run finds the pending rows and carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Engine, bindparam, case, select, update
from sqlalchemy.orm import Session

from marsad import artifacts, store
from marsad.clusters import ClusterItem, ClusterSettings, assign_clusters
from marsad.config import Settings
from marsad.db import session_scope
from marsad.errors import FeedParseError, InputError
from marsad.extract import ExtractedPage, ExtractorPool, detect_language
from marsad.feeds import FeedItem, ParsedFeed, canonical_url, parse_feed
from marsad.fetch import Fetcher, FetchReason, FetchResult, FetchStatus, HostSpacing
from marsad.progress import report_progress
from marsad.tagging import TagResult, get_tagger
from marsad.text import one_line, scrub
from models import (
    Article,
    ArticleTag,
    DateSource,
    ExtractionStatus,
    Feed,
    IngestRun,
    RunStatus,
    utcnow,
)

T = TypeVar("T")
R = TypeVar("R")

# A claimed feed is left to its run for this long; a run that dies frees it when it expires.
FEED_LEASE = timedelta(hours=1)
MAX_PAGE_ATTEMPTS = 3
# A date this far ahead of the fetch is a publisher's mistake, not a scheduled story.
FUTURE_TOLERANCE = timedelta(days=1)
# Retry-After beyond this is a misconfigured server, not a reason to park a feed for years.
MAX_RETRY_AFTER = timedelta(days=1)
# How much earlier than its interval a feed falls due: a run on a fixed schedule polls it a few
# seconds later each time, and must not skip it for being a few seconds early.
POLL_SLACK = timedelta(minutes=2)
# How a feed switched off for failing is told from one disabled by hand.
AUTO_INACTIVE = "set inactive after"
# HTTP statuses that mean the page is gone for good: keep the feed's summary, never refetch.
GONE_STATUSES = {404, 410}
PERMANENT_REASONS = {"blocked_address", "bad_scheme", "bad_url"}


# Runs ----------------------------------------------------------------------------------------


class StageClock:
    """Wall seconds per stage, summed over a run's batches: where the run's time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, work: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started


def open_run(engine: Engine, flow_run_id: str | None = None) -> int:
    with session_scope(engine) as session:
        return store.start_run(session, now=utcnow(), flow_run_id=flow_run_id)


# Poll ----------------------------------------------------------------------------------------


@dataclass
class FeedPoll:
    feed: store.ClaimedFeed
    result: FetchResult
    polled_at: datetime  # when the response was complete


def check_feeds_registered(engine: Engine, feed_urls: Sequence[str]) -> None:
    with session_scope(engine) as session:
        known = store.feeds_by_url(session, feed_urls)
    unknown = [url for url in feed_urls if url not in known]
    if unknown:
        raise InputError(
            f"feed not registered: {', '.join(unknown)} (add it with `marsad feeds add`)"
        )


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

    async def fetch(fetcher: Fetcher, feed: store.ClaimedFeed) -> FeedPoll:
        result = await fetcher.fetch(feed.url, etag=feed.etag, last_modified=feed.last_modified)
        return FeedPoll(feed, result, utcnow())

    return _fetch_concurrently(settings, "poll feeds", claimed, fetch)


def _fetch_concurrently(
    settings: Settings,
    stage: str,
    items: Sequence[T],
    fetch: Callable[[Fetcher, T], Awaitable[R]],
    host_spacing: HostSpacing | None = None,
) -> list[R]:
    """Run ``fetch`` for every item on one polite Fetcher, reporting progress; results in order."""
    if not items:
        return []

    async def run() -> list[R]:
        async with Fetcher.from_settings(settings, host_spacing=host_spacing) as fetcher:
            done = 0

            async def one(item: T) -> R:
                nonlocal done
                result = await fetch(fetcher, item)
                done += 1
                report_progress(stage, done, len(items))
                return result

            return await asyncio.gather(*(one(item) for item in items))

    return asyncio.run(run())


@dataclass
class FeedCheck:
    """One feed fetched and parsed now, outside any run: what ``marsad feeds check`` shows."""

    url: str
    result: FetchResult
    parsed: ParsedFeed | None = None
    error: str | None = None

    @property
    def title(self) -> str | None:
        return self.parsed.title if self.parsed else None

    def newest(self, limit: int) -> list[FeedItem]:
        items = self.parsed.items if self.parsed else []
        oldest = datetime.min.replace(tzinfo=UTC)
        return sorted(items, key=lambda item: item.published_at or oldest, reverse=True)[:limit]

    def describe(self) -> str:
        parsed = self.parsed
        assert parsed is not None
        notes = [f"HTTP {self.result.http_status}", f"{len(self.result.body):,} bytes",
                 f"{len(parsed.items)} items", f"{self.result.elapsed:.2f} s"]
        if parsed.language:
            notes.append(f"language {parsed.language}")
        if parsed.recovered_error:
            notes.append(f"malformed XML, recovered: {parsed.recovered_error}")
        if parsed.skipped:
            notes.append("items skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(parsed.skipped.items())))
        if self.result.final_url != self.url:
            notes.append(f"redirected to {self.result.final_url}")
        return f"{parsed.title or self.url}: " + "; ".join(notes)


def check_feed(settings: Settings, url: str) -> FeedCheck:
    """Fetch and parse ``url`` with the ingest's fetcher and parser; records nothing."""

    async def fetch(fetcher: Fetcher, feed_url: str) -> FetchResult:
        return await fetcher.fetch(feed_url)

    (result,) = _fetch_concurrently(settings, "check feed", [url], fetch)
    if not result.ok:
        return FeedCheck(url, result, error=result.error or result.reason or "fetch failed")
    try:
        parsed = parse_feed(result.body, result.final_url, result.content_type)
    except FeedParseError as exc:
        return FeedCheck(url, result, error=str(exc))
    return FeedCheck(url, result, parsed)


# Parse ---------------------------------------------------------------------------------------


class PollOutcome(StrEnum):
    OK = "ok"
    UNCHANGED = "unchanged"  # same body hash although the server ignored our validators
    NOT_MODIFIED = "not_modified"  # 304
    FAILED = "failed"


@dataclass
class FeedOutcome:
    """What one poll of one feed came to; stored by ``record_feeds``."""

    poll: FeedPoll
    status: PollOutcome
    items: list[FeedItem] = field(default_factory=list)
    body_hash: str | None = None
    reason: str | None = None
    error: str | None = None
    recovered_error: str | None = None
    skipped: Counter[str] = field(default_factory=Counter)  # items left out, by reason
    hint_minutes: float | None = None  # the feed's declared update interval, when parsed

    @property
    def feed(self) -> store.ClaimedFeed:
        return self.poll.feed


def parse_feeds(polls: Sequence[FeedPoll]) -> list[FeedOutcome]:
    return [parse_poll(poll) for poll in polls]


def parse_poll(poll: FeedPoll) -> FeedOutcome:
    result = poll.result
    if result.status == FetchStatus.NOT_MODIFIED:
        return FeedOutcome(poll, PollOutcome.NOT_MODIFIED, body_hash=poll.feed.body_hash)
    if not result.ok:
        return FeedOutcome(poll, PollOutcome.FAILED, reason=result.reason, error=result.error)
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == poll.feed.body_hash:
        return FeedOutcome(poll, PollOutcome.UNCHANGED, body_hash=body_hash)
    try:
        parsed = parse_feed(result.body, result.final_url, result.content_type)
    except FeedParseError as exc:
        return FeedOutcome(poll, PollOutcome.FAILED, reason=exc.reason, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one feed's surprise must not stop the run
        return FeedOutcome(
            poll,
            PollOutcome.FAILED,
            reason="parser_error",
            error=f"{type(exc).__name__}: {one_line(str(exc), 300)}",
        )
    return FeedOutcome(
        poll,
        PollOutcome.OK,
        items=parsed.items,
        body_hash=body_hash,
        recovered_error=parsed.recovered_error,
        skipped=parsed.skipped,
        hint_minutes=parsed.hint_minutes,
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
        with session_scope(engine) as session:
            new_count, problems = _record_one(session, settings, run_id, outcome)
        report.articles_new += new_count
        if outcome.status == PollOutcome.FAILED:
            report.feeds_failed += 1
            report.failures[f"feed:{outcome.reason or 'error'}"] += 1
        elif outcome.status == PollOutcome.OK:
            report.feeds_ok += 1
        else:
            report.feeds_unchanged += 1
        for reason, count in (outcome.skipped + problems).items():
            report.failures[f"item:{reason}"] += count
    return report


def _record_one(
    session: Session, settings: Settings, run_id: int, outcome: FeedOutcome
) -> tuple[int, Counter[str]]:
    feed, result, now = outcome.feed, outcome.poll.result, outcome.poll.polled_at
    rows, problems = _article_rows(feed.id, outcome.items, now)
    new_ids: list[int] = []
    if rows:
        inserted = session.execute(
            store.insert_ignoring_conflicts(session, Article).returning(Article.id), rows
        )
        new_ids = list(inserted.scalars())

    values: dict[str, Any] = {"last_fetched_at": now, "last_status": outcome.status}
    if outcome.status == PollOutcome.FAILED:
        failures = feed.error_count + 1
        values |= {
            # Counted in SQL: an overlapping `ingest --feed` must not lose an increment.
            "error_count": Feed.error_count + 1,
            "last_error": one_line(outcome.error, 2000),
            "next_poll_at": next_poll_after_failure(now, failures, result.retry_after, settings),
        }
        if failures >= settings.feed_max_failures:
            values |= {
                "active": False,
                "last_error": one_line(
                    f"{AUTO_INACTIVE} {failures} failed polls in a row "
                    f"(`marsad feeds enable` to retry); last error: {outcome.error}",
                    2000,
                ),
            }
    else:
        hint = outcome.hint_minutes if outcome.hint_minutes is not None else feed.feed_hint_minutes
        interval = next_interval(feed.poll_interval_minutes, bool(new_ids), hint, settings)
        values |= {
            # `ingest --feed` on a feed switched off for failing: it answers again, so it is
            # polled again; a feed disabled by hand (no such reason) stays off.
            "active": case((Feed.last_error.startswith(AUTO_INACTIVE), True), else_=Feed.active),
            "error_count": 0,
            "last_error": None,
            "last_success_at": now,
            "poll_interval_minutes": interval,
            "feed_hint_minutes": hint,
            "next_poll_at": max(
                # A little early: the next scheduled run a whole interval later must find it due.
                now + timedelta(minutes=interval) - POLL_SLACK,
                not_before(now, result.retry_after),
            ),
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
        items_seen=len(outcome.items) + sum(outcome.skipped.values()),
        items_new=len(new_ids),
        duration_ms=round(result.elapsed * 1000),
        error=one_line(outcome.error or outcome.recovered_error, 2000),
        item_failures=dict(outcome.skipped + problems) or None,
    )
    return len(new_ids), problems


def _article_rows(
    feed_id: int, items: Sequence[FeedItem], now: datetime
) -> tuple[list[dict[str, Any]], Counter[str]]:
    rows: dict[str, dict[str, Any]] = {}
    problems: Counter[str] = Counter()
    for item in items:
        try:
            canonical = canonical_url(item.link)
        except InputError:
            problems["bad_link"] += 1
            continue
        published, source = _feed_date(item.published_at, now)
        if item.published_raw and published is None:
            problems["bad_date"] += 1
        # A feed listing one URL twice keeps the first; the database drops URLs already known.
        rows.setdefault(
            canonical,
            {
                "canonical_url": canonical,
                "url": scrub(item.link),
                "guid": one_line(item.guid, 2048),
                "feed_id": feed_id,
                "title": one_line(item.title),
                "summary": scrub(item.summary),
                "text": scrub(item.summary),
                "author": one_line(item.author, 512),
                "published_at": published,
                "date_source": source,
                "discovered_at": now,
                "story_at": published or now,
                "extraction_status": ExtractionStatus.PENDING,
                "fetch_attempts": 0,
            },
        )
    # Inserting in one global order keeps two overlapping runs from deadlocking on PostgreSQL.
    return [rows[key] for key in sorted(rows)], problems


def _feed_date(value: datetime | None, now: datetime) -> tuple[datetime | None, str | None]:
    if value is None or value > now + FUTURE_TOLERANCE:
        return None, None
    return value, DateSource.FEED


def next_interval(
    current: float | None, brought_new: bool, hint: float | None, settings: Settings
) -> float:
    """Minutes to wait after a successful poll: halved when the feed brought new items, half as
    long again when it did not, within [poll_min_minutes, poll_max_hours] and never below the
    feed's own update hint (capped at the maximum)."""
    low, high = settings.poll_min_minutes, settings.poll_max_hours * 60
    interval = low if current is None else (current / 2 if brought_new else current * 1.5)
    interval = min(max(interval, low), high)
    if hint is not None:
        interval = max(interval, min(hint, high))
    return round(interval, 2)


def not_before(now: datetime, retry_after: float | None) -> datetime:
    """``now`` pushed back by a Retry-After, within reason."""
    if not retry_after or not math.isfinite(retry_after) or retry_after <= 0:
        return now
    return now + min(timedelta(seconds=retry_after), MAX_RETRY_AFTER)


def next_poll_after_failure(
    now: datetime, error_count: int, retry_after: float | None, settings: Settings
) -> datetime:
    """Exponential backoff per consecutive failure, capped; never sooner than Retry-After."""
    return max(
        now + backoff(error_count, settings.backoff_base_minutes, settings.backoff_max_hours),
        not_before(now, retry_after),
    )


def backoff(failures: int, base_minutes: int, max_hours: int) -> timedelta:
    delay = timedelta(minutes=base_minutes) * (2 ** min(max(failures - 1, 0), 16))
    return min(delay, timedelta(hours=max_hours))


# Pages ---------------------------------------------------------------------------------------


def page_lease(settings: Settings, batch: int) -> timedelta:
    """Long enough for the slowest batch: every page from one host, per-host limit, deadline."""
    slowest = math.ceil(batch / max(settings.fetch_per_host, 1)) * settings.fetch_deadline
    return max(timedelta(minutes=10), timedelta(seconds=slowest) * 1.5)


def claim_pages(
    engine: Engine, settings: Settings, limit: int | None = None, *, backfilled: bool = False
) -> list[store.PendingArticle]:
    """Claim the next batch of pages to fetch: ``limit``, or ``settings.page_batch``, at most;
    feed articles, or with ``backfilled`` the ones a backfill discovered."""
    limit = limit or settings.page_batch
    now = utcnow()
    with session_scope(engine) as session:
        return store.claim_pages(
            session,
            now=now,
            lease_until=now + page_lease(settings, limit),
            limit=limit,
            max_attempts=MAX_PAGE_ATTEMPTS,
            backfilled=backfilled,
        )


@dataclass
class PageFetch:
    article: store.PendingArticle
    result: FetchResult


def fetch_pages(
    settings: Settings,
    pending: Sequence[store.PendingArticle],
    host_spacing: HostSpacing | None = None,
) -> list[PageFetch]:
    """Fetch the pages, concurrently within the per-host limit; ``host_spacing`` (the backfill's,
    shared by all its batches) also keeps a pause between two requests to one host."""

    async def fetch(fetcher: Fetcher, article: store.PendingArticle) -> PageFetch:
        return PageFetch(article, await fetcher.fetch(article.url))

    return _fetch_concurrently(settings, "fetch pages", pending, fetch, host_spacing)


@dataclass
class ArticleUpdate:
    """What to store for one article: its new column values, then its tags."""

    article_id: int
    values: dict[str, Any]
    story_time: datetime  # when the story ran: its date, else when it was first seen
    tags: TagResult | None = None
    failure: str | None = None  # reason counted in the run summary


def extract_pages(
    pool: ExtractorPool, settings: Settings, fetched: Sequence[PageFetch]
) -> list[ArticleUpdate]:
    """Extract every fetched page in the process pool, and decide what each article keeps."""
    with_body = [item for item in fetched if item.result.ok]
    pages = pool.extract_many(
        [(item.result.final_url, item.result.body, item.result.content_type) for item in with_body]
    )
    by_id = {item.article.id: page for item, page in zip(with_body, pages, strict=True)}
    now = utcnow()
    return [
        build_update(item.article, item.result, by_id.get(item.article.id), now, settings)
        for item in fetched
    ]


def build_update(
    article: store.PendingArticle,
    result: FetchResult,
    page: ExtractedPage | None,
    now: datetime,
    settings: Settings,
) -> ArticleUpdate:
    """Decide what to store for one article from its fetch and extraction. Pure."""
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
            "text": scrub(page.text),
            "extraction_status": ExtractionStatus.OK,
            "extraction_method": page.method,
        }
    else:
        # Keep the article with what its feed said (or the page's few words, if longer), and
        # record why the page gave nothing better.
        values |= {"text": article.summary, "extraction_method": "feed_summary"}
        if page is not None:
            if len(page.text) > len(article.summary or ""):
                values |= {"text": scrub(page.text), "extraction_method": page.method}
            values |= {"extraction_status": _page_status(page.status), "extraction_error": page.error}
            failure = f"page:{page.status}"
        elif result.http_status in GONE_STATUSES:
            values |= {"extraction_status": ExtractionStatus.GONE, "extraction_error": result.error}
            failure = f"page:http_{result.http_status}"
        elif result.reason in PERMANENT_REASONS:
            values |= {"extraction_status": ExtractionStatus.BLOCKED, "extraction_error": result.error}
            failure = f"page:{result.reason}"
        elif result.reason == FetchReason.TOO_LARGE:
            # Fetching it again would download the same oversized body (or bomb) again.
            values |= {"extraction_status": ExtractionStatus.TOO_LARGE, "extraction_error": result.error}
            failure = f"page:{result.reason}"
        else:
            retry_in = backoff(
                article.fetch_attempts + 2, settings.backoff_base_minutes, settings.backoff_max_hours
            )
            values |= {
                "extraction_status": ExtractionStatus.FETCH_FAILED,
                "extraction_error": result.error,
                "next_fetch_at": max(now + retry_in, not_before(now, result.retry_after)),
            }
            failure = f"page:{result.reason or 'error'}"

    values["title"] = article.title
    if page is not None:
        values |= {
            "author": article.author or one_line(page.author, 512),
            "site_name": one_line(page.site_name, 300),
        }
        if not article.title:
            values["title"] = one_line(page.title)
    values["extraction_error"] = one_line(values["extraction_error"], 2000)
    values |= _dates(article, page, now)
    text = values["text"] or ""
    values["language"] = (
        (page.language if page is not None and page.status == "ok" else None)
        or detect_language(f"{values['title'] or ''}\n{text}")
        or article.feed_language
    )
    values["content_hash"] = content_hash(text) if text else None
    story_time = values.get("published_at", article.published_at) or article.discovered_at
    values["story_at"] = story_time
    return ArticleUpdate(article.id, values, story_time, failure=failure)


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
    return {"published_at": now, "date_source": DateSource.FETCHED}


def content_hash(text: str) -> str:
    """Hash of the text with whitespace and case folded: equal for copies of one text."""
    return hashlib.sha256(" ".join(text.casefold().split()).encode()).hexdigest()


def tag_articles(updates: Sequence[ArticleUpdate]) -> list[ArticleUpdate]:
    tagger = get_tagger()
    for item in updates:
        item.tags = tagger.tag(item.values["title"], item.values["text"], item.values["language"])
    return list(updates)


@dataclass
class StoreReport:
    stored: int = 0
    failures: Counter[str] = field(default_factory=Counter)


def store_articles(
    engine: Engine, settings: Settings, updates: Sequence[ArticleUpdate]
) -> StoreReport:
    """Write each article, replace its tags and give it its story cluster.

    Rewriting the same update twice is harmless, so a retried store repeats nothing.
    """
    report = StoreReport()
    now = utcnow()
    tagger_version = get_tagger().version
    cluster_settings = ClusterSettings(
        threshold=settings.cluster_threshold,
        window=timedelta(days=settings.cluster_window_days),
        containment=settings.cluster_containment,
    )
    articles, tags = Article.__table__, ArticleTag.__table__
    with session_scope(engine) as session:
        # Clusters first: they read the rows as they were, the batch's own articles from memory.
        clusters = assign_clusters(
            session,
            [ClusterItem(item.article_id, item.values["text"], item.story_time) for item in updates],
            cluster_settings,
        )
        # One executemany per set of columns written (an extracted page and a failed fetch write
        # different ones): a statement compiled once instead of once per article.
        rows_by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for item in updates:
            values = dict(item.values) | clusters[item.article_id]
            if item.tags is not None:
                values |= {
                    "places": list(item.tags.places),
                    "actors": list(item.tags.actors),
                    "tagged_with": tagger_version,
                }
            rows_by_columns[tuple(sorted(values))].append({"_id": item.article_id, **values})
        for columns, rows in rows_by_columns.items():
            session.execute(
                update(articles)
                .where(articles.c.id == bindparam("_id"))
                .values({c: bindparam(c, type_=articles.c[c].type) for c in columns}),
                rows,
            )
        # A page that gave the story a date moves the article's tags with it.
        dated = [
            {"_id": item.article_id, "_story": item.story_time}
            for item in updates
            if "published_at" in item.values
        ]
        if dated:
            story = bindparam("_story", type_=tags.c.story_at.type)
            session.execute(
                update(tags)
                .where(tags.c.article_id == bindparam("_id"), tags.c.story_at != story)
                .values(story_at=story),
                dated,
            )
        tagged = [item for item in updates if item.tags is not None]
        existing: dict[int, list[ArticleTag]] = defaultdict(list)
        if tagged:
            for tag in session.scalars(
                select(ArticleTag).where(ArticleTag.article_id.in_([i.article_id for i in tagged]))
            ):
                existing[tag.article_id].append(tag)
        for item in tagged:
            assert item.tags is not None
            store.write_tags(
                session, item.article_id, item.tags.to_dict()["topics"], tagger_version, now,
                existing=existing[item.article_id], story_at=item.story_time,
            )
        for item in updates:
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
    error: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def as_markdown(self, feed_table: Sequence[str] = ()) -> str:
        """The totals, failures by reason and time per stage; then ``feed_table`` (the per-feed
        lines of ``marsad.artifacts.feed_table``) or, without it, the failed feeds, bounded."""
        lines = [
            f"# Ingest run {self.run_id}: {self.status}",
            "",
            "| feeds polled | ok | unchanged | failed | new articles | pages stored | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.feeds_polled} | {self.feeds_ok} | {self.feeds_unchanged} "
            f"| {self.feeds_failed} | {self.articles_new} | {self.articles_stored} "
            f"| {self.duration_s:.1f} |",
        ]
        if self.error:
            lines += ["", f"Run error: {_md(self.error)}"]
        if self.failures:
            lines += ["", "| failure | count |", "|---|---:|"]
            lines += [f"| {_md(reason)} | {count} |" for reason, count in sorted(self.failures.items())]
        if feed_table:
            lines += ["", *feed_table]
        elif self.failed_feeds:
            lines += ["", *artifacts.table(["failed feed", "error"], self.failed_feeds, what="feeds")]
        if self.stage_seconds:
            lines += ["", "| stage | seconds |", "|---|---:|"]
            lines += [f"| {stage} | {seconds:.2f} |" for stage, seconds in self.stage_seconds.items()]
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
    stage_seconds: dict[str, float] | None = None,
) -> RunSummary:
    failures = Counter(record.failures)
    for report in stored:
        failures.update(report.failures)
    articles_stored = sum(report.stored for report in stored)
    now = utcnow()
    with session_scope(engine) as session:
        run = session.get(IngestRun, run_id)
        if run is None:
            raise InputError(f"no ingest run {run_id}")
        run.finished_at = now
        run.status = status
        run.feeds_polled = len(outcomes)
        run.feeds_ok = record.feeds_ok
        run.feeds_unchanged = record.feeds_unchanged
        run.feeds_failed = record.feeds_failed
        run.articles_new = record.articles_new
        run.articles_stored = articles_stored
        run.failures = dict(failures) or None
        run.error = one_line(error, 2000)
        run.stage_seconds = stage_seconds
        started = run.started_at
    return RunSummary(
        run_id=run_id,
        status=str(status),
        feeds_polled=len(outcomes),
        feeds_ok=record.feeds_ok,
        feeds_unchanged=record.feeds_unchanged,
        feeds_failed=record.feeds_failed,
        articles_new=record.articles_new,
        articles_stored=articles_stored,
        failures=dict(failures),
        failed_feeds=[
            (o.feed.url, o.error or o.reason or "error")
            for o in outcomes
            if o.status == PollOutcome.FAILED
        ],
        duration_s=(now - started).total_seconds(),
        error=one_line(error, 500),
        stage_seconds=dict(stage_seconds or {}),
    )
