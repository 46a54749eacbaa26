"""Source health: feeds that fail, feeds that have gone silent, and feeds switched off after
failing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from models import Article, Feed

# A feed "usually publishes" when its last four weeks of articles before its newest one average at
# least one every other day; a feed that posts twice a month is not silent after three quiet days.
USUAL_WINDOW = timedelta(days=28)
USUAL_MIN_ARTICLES = 14
# What `marsad status` tells an operator to do about a feed switched off after failing.
ENABLE_HINT = "re-enable with: marsad feeds enable {url}"


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
    # Inactive feeds whose last poll failed: switched off after MARSAD_FEED_MAX_FAILURES failures
    # in a row (or disabled while failing). ``detail`` is the last error, ``since`` the last poll.
    switched_off: tuple[FeedProblem, ...] = ()

    @property
    def healthy(self) -> bool:
        return not (self.failing or self.silent or self.switched_off)


def feed_health(session: Session, now: datetime, silent_after: timedelta) -> FeedHealth:
    """Active feeds whose last poll failed; active feeds that usually publish but have stored
    nothing new for ``silent_after``; inactive feeds whose last poll failed.

    One statement over the feeds, which reads articles by index seeks on (feed_id,
    discovered_at), never by grouping them all, so source health stays fast on millions of
    articles: whether an active feed has anything since the cutoff, and for those that have not,
    the newest article and the one USUAL_MIN_ARTICLES back. The feed "usually publishes" when that
    earlier article falls within USUAL_WINDOW of the newest.
    """
    cutoff = now - silent_after
    feeds = session.connection().execute(_feeds_statement(), {"cutoff": cutoff}).all()
    failing, silent, switched_off = [], [], []
    for feed in feeds:
        name = feed.name or feed.url
        if not feed.active:
            detail = feed.last_error or f"{feed.last_status}: no detail"
            switched_off.append(FeedProblem(name, feed.url, detail, feed.last_fetched_at))
        elif feed.error_count > 0:
            detail = f"{feed.last_status or 'error'}: {feed.last_error or 'no detail'}" + (
                f" ({feed.error_count} failures in a row)" if feed.error_count > 1 else ""
            )
            failing.append(FeedProblem(name, feed.url, detail, feed.last_success_at))
        elif (
            feed.last is not None
            and feed.last < cutoff
            and feed.usual_since is not None
            and feed.usual_since > feed.last - USUAL_WINDOW
        ):
            days = (now - feed.last).days
            silent.append(FeedProblem(name, feed.url, f"nothing new for {days} days", feed.last))
    return FeedHealth(tuple(failing), tuple(silent), tuple(switched_off))


@lru_cache(maxsize=1)
def _feeds_statement() -> Any:
    # Built once: `marsad status` and every digest ask, and building costs more than the query.
    def newest(skip: int) -> Any:
        return (
            select(Article.discovered_at)
            .where(Article.feed_id == Feed.id)
            .order_by(Article.discovered_at.desc())
            .limit(1)
            .offset(skip)
            .correlate(Feed)
            .scalar_subquery()
        )

    recent = (
        select(Article.id)
        .where(Article.feed_id == Feed.id, Article.discovered_at >= bindparam("cutoff"))
        .correlate(Feed)
        .exists()
    )
    active = Feed.active.is_(True)
    # Only the feeds with a problem: failing, quiet since the cutoff, or switched off after failing.
    return (
        select(
            Feed.name, Feed.url, Feed.active, Feed.error_count, Feed.last_status,
            Feed.last_error, Feed.last_fetched_at, Feed.last_success_at,
            newest(0).label("last"), newest(USUAL_MIN_ARTICLES - 1).label("usual_since"),
        )
        .where(
            or_(
                and_(active, Feed.error_count > 0),
                and_(active, Feed.error_count == 0, ~recent),
                and_(~active, or_(Feed.last_status == "failed", Feed.last_error.is_not(None))),
            )
        )
        .order_by(Feed.id)
    )  # fmt: skip
