"""`marsad status`: is Marsad working? Feeds, the last runs, digests and today's counts at a glance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.orm import Session

from marsad.config import Settings
from marsad.health import ENABLE_HINT, FeedHealth, feed_health
from marsad.trends import topic_counts
from models import RETRYABLE_STATUSES, Article, Digest, Feed, IngestRun


@dataclass(frozen=True)
class RunLine:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    feeds_polled: int
    feeds_failed: int
    articles_new: int
    articles_stored: int
    failures: dict[str, int]
    error: str | None


@dataclass(frozen=True)
class DigestLine:
    recipient: str
    day: str
    status: str
    stories: int
    detail: str | None


@dataclass(frozen=True)
class Status:
    feeds_active: int
    feeds_inactive: int
    health: FeedHealth
    pages_waiting: int  # pages not fetched yet, or to be retried
    runs: tuple[RunLine, ...]
    digests: tuple[DigestLine, ...]
    topics: list[dict[str, Any]]  # [{"topic", "today", "last_7_days"}] in the analysts' days

    @property
    def feeds_ok(self) -> int:
        return self.feeds_active - len(self.health.failing) - len(self.health.silent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feeds": {
                "active": self.feeds_active,
                "inactive": self.feeds_inactive,
                "ok": self.feeds_ok,
                "failing": [asdict(p) for p in self.health.failing],
                "silent": [asdict(p) for p in self.health.silent],
                # Inactive after failing: since is the last (failed) poll.
                "switched_off": [
                    asdict(p) | {"hint": ENABLE_HINT.format(url=p.url)}
                    for p in self.health.switched_off
                ],
            },
            "pages_waiting": self.pages_waiting,
            "runs": [asdict(r) for r in self.runs],
            "digests": [asdict(d) for d in self.digests],
            "topics": self.topics,
        }


def collect(session: Session, settings: Settings, now: datetime, runs: int = 5) -> Status:
    """What `marsad status` shows. A handful of statements, built once, each reading an index
    (feeds are few; runs by id; digests by recipient; pages by status; tags by topic and time)."""
    statements = _statements()
    connection = session.connection()  # plain rows: no ORM work per statement
    active = dict(connection.execute(statements["feeds"]).all())
    recent_runs = tuple(
        RunLine(
            r.id, r.started_at, r.finished_at, r.status, r.feeds_polled, r.feeds_failed,
            r.articles_new, r.articles_stored, dict(r.failures or {}), r.error,
        )
        for r in connection.execute(statements["runs"], {"runs": runs})
    )  # fmt: skip
    digests = tuple(
        DigestLine(d.recipient, d.digest_date.isoformat(), d.status, d.story_count, d.last_error)
        for d in connection.execute(statements["digests"])
    )
    waiting = connection.scalar(statements["waiting"])
    return Status(
        feeds_active=active.get(True, 0),
        feeds_inactive=active.get(False, 0),
        health=feed_health(session, now, timedelta(days=settings.silent_days)),
        pages_waiting=waiting or 0,
        runs=recent_runs,
        digests=digests,
        topics=topic_counts(session, now),
    )


@lru_cache(maxsize=1)
def _statements() -> dict[str, Any]:
    # Built once: building a statement costs more than running these.
    latest_digest = (
        select(Digest.recipient, func.max(Digest.digest_date).label("day"))
        .group_by(Digest.recipient)
        .subquery()
    )
    return {
        "feeds": select(Feed.active, func.count()).group_by(Feed.active),
        "runs": select(
            IngestRun.id, IngestRun.started_at, IngestRun.finished_at, IngestRun.status,
            IngestRun.feeds_polled, IngestRun.feeds_failed, IngestRun.articles_new,
            IngestRun.articles_stored, IngestRun.failures, IngestRun.error,
        )
        .order_by(IngestRun.id.desc())
        .limit(bindparam("runs", type_=Integer)),
        "digests": select(
            Digest.recipient, Digest.digest_date, Digest.status, Digest.story_count,
            Digest.last_error,
        )
        .join(
            latest_digest,
            (Digest.recipient == latest_digest.c.recipient)
            & (Digest.digest_date == latest_digest.c.day),
        )
        .order_by(Digest.recipient),
        "waiting": select(func.count())
        .select_from(Article)
        .where(Article.extraction_status.in_(RETRYABLE_STATUSES)),
    }  # fmt: skip
