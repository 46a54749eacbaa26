"""Source health: feeds that fail and feeds that have gone silent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Article, Feed

# A feed "usually publishes" when its last four weeks of articles before its newest one average at
# least one every other day; a feed that posts twice a month is not silent after three quiet days.
USUAL_WINDOW = timedelta(days=28)
USUAL_MIN_ARTICLES = 14


@dataclass(frozen=True)
class FeedProblem:
    name: str
    url: str
    detail: str
    since: datetime | None


@dataclass(frozen=True)
class FeedHealth:
    failing: tuple[FeedProblem, ...]
    silent: tuple[FeedProblem, ...]

    @property
    def healthy(self) -> bool:
        return not (self.failing or self.silent)


def feed_health(session: Session, now: datetime, silent_after: timedelta) -> FeedHealth:
    """Active feeds whose last poll failed, and active feeds that usually publish but have stored
    nothing new for ``silent_after``."""
    failing = tuple(
        FeedProblem(
            feed.name or feed.url,
            feed.url,
            f"{feed.last_status or 'error'}: {feed.last_error or 'no detail'}"
            + (f" ({feed.error_count} failures in a row)" if feed.error_count > 1 else ""),
            feed.last_success_at,
        )
        for feed in session.scalars(
            select(Feed).where(Feed.active.is_(True), Feed.error_count > 0).order_by(Feed.id)
        )
    )
    failing_ids = {p.url for p in failing}

    newest = (
        select(Article.feed_id, func.max(Article.discovered_at).label("newest"))
        .where(Article.feed_id.is_not(None))
        .group_by(Article.feed_id)
        .subquery()
    )
    quiet = session.execute(
        select(Feed, newest.c.newest)
        .join(newest, newest.c.feed_id == Feed.id)
        .where(Feed.active.is_(True), newest.c.newest < now - silent_after)
        .order_by(Feed.id)
    ).all()
    silent = []
    for feed, last in quiet:
        if feed.url in failing_ids:
            continue  # already listed, with its error
        recent = session.scalar(
            select(func.count())
            .select_from(Article)
            .where(
                Article.feed_id == feed.id,
                Article.discovered_at > last - USUAL_WINDOW,
                Article.discovered_at <= last,
            )
        )
        if recent is not None and recent >= USUAL_MIN_ARTICLES:
            days = (now - last).days
            silent.append(
                FeedProblem(feed.name or feed.url, feed.url, f"nothing new for {days} days", last)
            )
    return FeedHealth(failing, tuple(silent))
