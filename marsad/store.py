"""Reading and writing Marsad's tables. Every function takes its Session; callers own transactions.

Idempotency lives in the database: unique constraints plus insert-on-conflict, and claims made by
conditional UPDATEs, so reruns, crashes and overlapping runs never store anything twice.
"""

from __future__ import annotations

import math

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from marsad.errors import InputError
from marsad.feeds import FeedSpec
from marsad.text import one_line
from models import (
    RETRYABLE_STATUSES,
    Article,
    ArticleTag,
    Feed,
    FetchEvent,
    IngestRun,
    RunStatus,
)

def insert_ignoring_conflicts(session: Session, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the session's dialect."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise InputError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


# Feeds ---------------------------------------------------------------------------------------


_SOURCE_FIELDS = ("country", "source_type", "homepage")


def add_feeds(session: Session, specs: Iterable[FeedSpec]) -> tuple[int, int]:
    """Record feeds; returns (added, already_known).

    A known feed keeps its name, language and state; only the outlet details it lacks (country,
    type, homepage) are filled in from ``specs``, so importing a list twice changes nothing.
    """
    unique = list({spec.url: spec for spec in specs}.values())
    if not unique:
        return 0, 0
    rows = [
        {
            "url": spec.url,
            "name": one_line(spec.name, 300),
            "language": one_line(spec.language, 16),
            "country": spec.country,
            "source_type": spec.source_type,
            "homepage": spec.homepage,
        }
        for spec in unique
    ]
    result = session.execute(
        insert_ignoring_conflicts(session, Feed).returning(Feed.url), rows
    )
    added = set(result.scalars().all())
    for spec in unique:
        if spec.url in added:
            continue
        for field in _SOURCE_FIELDS:
            if getattr(spec, field) is not None:
                column = getattr(Feed, field)
                session.execute(
                    update(Feed)
                    .where(Feed.url == spec.url, column.is_(None))
                    .values({column: getattr(spec, field)}),
                    execution_options={"synchronize_session": False},
                )
    return len(added), len(unique) - len(added)


def set_feed_active(session: Session, url: str, *, active: bool) -> None:
    """Enable a feed (its failure streak forgotten, due at once) or disable it."""
    values: dict[str, Any] = {"active": active}
    if active:
        values |= {"error_count": 0, "next_poll_at": None, "poll_interval_minutes": None}
    updated = session.execute(
        update(Feed).where(Feed.url == url).values(**values),
        execution_options={"synchronize_session": False},
    ).rowcount
    if not updated:
        raise InputError(f"feed not registered: {url}")


def has_feeds(session: Session) -> bool:
    return session.scalar(select(Feed.id).limit(1)) is not None


def list_feeds(session: Session) -> Sequence[Feed]:
    return session.scalars(select(Feed).order_by(Feed.id)).all()


def feeds_by_url(session: Session, urls: Sequence[str]) -> dict[str, Feed]:
    return {f.url: f for f in session.scalars(select(Feed).where(Feed.url.in_(urls)))}


@dataclass(frozen=True)
class ClaimedFeed:
    id: int
    url: str
    name: str | None
    language: str | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    error_count: int
    poll_interval_minutes: float | None = None
    feed_hint_minutes: float | None = None


def claim_feeds(
    session: Session,
    *,
    now: datetime,
    lease_until: datetime,
    urls: Sequence[str] | None = None,
) -> list[ClaimedFeed]:
    """Claim the feeds this run polls: due active feeds, or exactly ``urls`` when given.

    One conditional UPDATE ... RETURNING: a feed another run has just claimed has its next_poll_at
    in the future and is skipped, on SQLite and PostgreSQL alike.
    """
    if urls:
        condition = Feed.url.in_(urls)
    else:
        condition = and_(
            Feed.active.is_(True), or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now)
        )
    statement = (
        update(Feed)
        .where(condition)
        .values(next_poll_at=lease_until)
        .returning(
            Feed.id,
            Feed.url,
            Feed.name,
            Feed.language,
            Feed.etag,
            Feed.last_modified,
            Feed.body_hash,
            Feed.error_count,
            Feed.poll_interval_minutes,
            Feed.feed_hint_minutes,
        )
    )
    rows = session.execute(statement, execution_options={"synchronize_session": False}).all()
    return sorted((ClaimedFeed(*row) for row in rows), key=lambda feed: feed.id)


# Runs ----------------------------------------------------------------------------------------


def start_run(session: Session, *, now: datetime, flow_run_id: str | None = None) -> int:
    run = IngestRun(started_at=now, status=RunStatus.RUNNING, flow_run_id=flow_run_id)
    session.add(run)
    session.flush()
    return run.id


# Articles: the page queue ----------------------------------------------------------------------


@dataclass(frozen=True)
class PendingArticle:
    id: int
    url: str
    canonical_url: str
    title: str | None
    summary: str | None
    author: str | None
    published_at: datetime | None
    date_source: str | None
    discovered_at: datetime
    fetch_attempts: int
    feed_language: str | None
    feed_name: str | None


def claim_pages(
    session: Session,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    max_attempts: int,
    backfilled: bool = False,
) -> list[PendingArticle]:
    """Claim up to ``limit`` articles whose page is due for fetching: those found in feeds, or
    with ``backfilled`` those a backfill discovered (no feed), which only a backfill fetches, at
    its own polite pace."""
    due = and_(
        Article.extraction_status.in_([str(s) for s in RETRYABLE_STATUSES]),
        Article.fetch_attempts < max_attempts,
        or_(Article.next_fetch_at.is_(None), Article.next_fetch_at <= now),
        Article.feed_id.is_(None) if backfilled else Article.feed_id.is_not(None),
    )
    candidates = select(Article.id).where(due).order_by(Article.id).limit(limit)
    claimed_ids = session.scalars(
        update(Article)
        .where(Article.id.in_(candidates.scalar_subquery()), due)
        .values(next_fetch_at=lease_until)
        .returning(Article.id),
        execution_options={"synchronize_session": False},
    ).all()
    if not claimed_ids:
        return []
    rows = session.execute(
        select(
            Article.id,
            Article.url,
            Article.canonical_url,
            Article.title,
            Article.summary,
            Article.author,
            Article.published_at,
            Article.date_source,
            Article.discovered_at,
            Article.fetch_attempts,
            Feed.language,
            Feed.name,
        )
        .outerjoin(Feed, Feed.id == Article.feed_id)
        .where(Article.id.in_(claimed_ids))
        .order_by(Article.id)
    ).all()
    return [PendingArticle(*row) for row in rows]


@dataclass
class TagChanges:
    added: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def any(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def write_tags(
    session: Session,
    article_id: int,
    tags: Iterable[dict[str, Any]],
    tagger_version: str,
    now: datetime,
    existing: Iterable[ArticleTag] | None = None,
    story_at: datetime | None = None,
) -> TagChanges:
    """Make an article's tags ``tags``, writing only what differs.

    A tag that comes out the same keeps its row and the taxonomy version that first gave it; a
    changed one is rewritten with ``tagger_version``; a topic no longer given is removed.
    ``existing`` saves the lookup when the caller has loaded the article's tags already;
    ``story_at``, the article's story time, saves one per new tag.
    """
    if existing is None:
        existing = session.scalars(select(ArticleTag).where(ArticleTag.article_id == article_id))
    old = {tag.topic: tag for tag in existing}
    new = {tag["topic"]: tag for tag in tags}
    changes = TagChanges()
    gone = [old[topic].id for topic in old.keys() - new.keys()]
    if gone:
        session.execute(delete(ArticleTag).where(ArticleTag.id.in_(gone)))
        changes.removed = len(gone)
    added = []
    for topic, tag in new.items():
        current = old.get(topic)
        if current is None:
            added.append({
                "article_id": article_id, "topic": topic, "score": float(tag["score"]),
                "evidence": tag["evidence"], "tagger_version": tagger_version, "tagged_at": now,
                **({"story_at": story_at} if story_at is not None else {}),
            })
        elif not _same_tag(current, tag):
            session.execute(
                update(ArticleTag)
                .where(ArticleTag.id == current.id)
                .values(score=float(tag["score"]), evidence=tag["evidence"],
                        tagger_version=tagger_version, tagged_at=now),
                execution_options={"synchronize_session": False},
            )
            changes.updated += 1
    if added:
        session.execute(insert_ignoring_conflicts(session, ArticleTag), added)
        changes.added = len(added)
    return changes


def refresh_tag_story_times(session: Session, article_id: int, story_at: datetime) -> None:
    """Copy an article's new story time to its tags (article_tags.story_at, read by trends)."""
    session.execute(
        update(ArticleTag)
        .where(ArticleTag.article_id == article_id, ArticleTag.story_at != story_at)
        .values(story_at=story_at),
        execution_options={"synchronize_session": False},
    )


def _same_tag(row: ArticleTag, tag: dict[str, Any]) -> bool:
    return math.isclose(row.score, float(tag["score"]), abs_tol=1e-9) and _evidence_key(
        row.evidence
    ) == _evidence_key(tag["evidence"])


def _evidence_key(evidence: Sequence[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [(e.get("term"), e.get("field"), e.get("start"), e.get("end")) for e in evidence or []]


# Articles: reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArticleFilter:
    topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    source_type: str | None = None


def _article_query(filters: ArticleFilter) -> Select[tuple[Article]]:
    # An article's day is its publication date, or the day it was first seen when it has none.
    effective_date = Article.story_at
    query = select(Article).options(selectinload(Article.tags))
    if filters.topic:
        query = query.where(
            Article.id.in_(select(ArticleTag.article_id).where(ArticleTag.topic == filters.topic))
        )
    if filters.source_type:
        query = query.where(
            Article.feed_id.in_(select(Feed.id).where(Feed.source_type == filters.source_type))
        )
    if filters.since:
        query = query.where(effective_date >= filters.since)
    if filters.until:
        query = query.where(effective_date < filters.until)
    query = query.order_by(effective_date.desc(), Article.id.desc())
    if filters.limit:
        query = query.limit(filters.limit)
    return query


def list_articles(session: Session, filters: ArticleFilter) -> Sequence[Article]:
    return session.scalars(_article_query(filters)).all()


def iter_articles(session: Session, filters: ArticleFilter, batch: int = 500) -> Iterable[Article]:
    """Stream articles for exports without holding them all in memory."""
    result = session.scalars(_article_query(filters).execution_options(yield_per=batch))
    yield from result


def get_article(session: Session, article_id: int) -> Article:
    article = session.get(Article, article_id, options=[selectinload(Article.tags)])
    if article is None:
        raise InputError(f"no article with id {article_id}")
    return article


def feed_names(session: Session) -> dict[int, str]:
    return {
        feed_id: (name or url)
        for feed_id, name, url in session.execute(select(Feed.id, Feed.name, Feed.url))
    }


def feed_types(session: Session) -> dict[int, str]:
    rows = session.execute(select(Feed.id, Feed.source_type).where(Feed.source_type.is_not(None)))
    return {feed_id: source_type for feed_id, source_type in rows}


def feeds_recorded_in_run(session: Session, run_id: int) -> set[int]:
    return set(session.scalars(select(FetchEvent.feed_id).where(FetchEvent.run_id == run_id)))


def record_fetch_event(session: Session, **fields: Any) -> None:
    session.add(FetchEvent(**fields))
