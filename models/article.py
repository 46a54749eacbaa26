from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, utcnow
from models.types import JSONType, UTCDateTime


class ExtractionStatus(StrEnum):
    PENDING = "pending"  # known from its feed; page not fetched yet
    OK = "ok"
    TOO_SHORT = "too_short"  # page gave too little text: feed summary kept
    EMPTY = "empty"  # page had no article text at all: feed summary kept
    FAILED = "failed"  # extractor could not read the page: feed summary kept
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    GONE = "gone"  # 404/410: feed summary kept, never refetched
    FETCH_FAILED = "fetch_failed"  # transient fetch error: summary kept, retried in later runs
    BLOCKED = "blocked"  # link points to a refused address or scheme


# Statuses whose page a later run fetches again.
RETRYABLE_STATUSES = (ExtractionStatus.PENDING, ExtractionStatus.FETCH_FAILED)


class DateSource(StrEnum):
    FEED = "feed"
    PAGE = "page"
    FETCHED = "fetched"


def _story_at(context: ExecutionContext) -> datetime:
    """Default of articles.story_at: ``coalesce(published_at, discovered_at)`` of the new row."""
    values = context.get_current_parameters()
    return values.get("published_at") or values["discovered_at"]


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (
        UniqueConstraint("feed_id", "guid"),
        # Each feed's newest article is one index seek (source health, `marsad status`).
        Index("ix_articles_feed_id_discovered_at", "feed_id", "discovered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    canonical_url: Mapped[str] = mapped_column(String(2048), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    guid: Mapped[str | None] = mapped_column(String(2048))
    feed_id: Mapped[int | None] = mapped_column(
        ForeignKey("feeds.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(512))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    date_source: Mapped[str | None] = mapped_column(String(16))
    discovered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    language: Mapped[str | None] = mapped_column(String(16))
    site_name: Mapped[str | None] = mapped_column(String(300))
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    extraction_status: Mapped[str] = mapped_column(
        String(16), default=ExtractionStatus.PENDING, index=True
    )
    extraction_method: Mapped[str | None] = mapped_column(String(32))
    extraction_error: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    fetch_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Earliest time a run may fetch the page (again): a run claims a page by pushing it forward by a
    # lease, so an overlapping run skips it; a transient failure pushes it to the retry time.
    next_fetch_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    places: Mapped[list[str] | None] = mapped_column(JSONType)
    actors: Mapped[list[str] | None] = mapped_column(JSONType)
    # Story clusters group copies of one story across outlets: the id of the cluster's first
    # article. minhash is the text's MinHash signature (marsad/clusters.py), kept to compare
    # later articles against it.
    cluster_id: Mapped[int | None] = mapped_column(Integer, index=True)
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Distinct word shingles in the text: with the signatures' Jaccard estimate it tells how much of
    # a shorter text a longer one contains. NULL on articles clustered before it was kept.
    shingle_count: Mapped[int | None] = mapped_column(Integer)
    # The taxonomy version that last tagged this article (its tags keep the version that set them).
    tagged_with: Mapped[str | None] = mapped_column(String(32))
    # When the story ran: its publication time, else when it was first seen (the day trends, digests
    # and "articles list" count it on). Written with published_at (marsad.ingest); filled from the
    # inserted values when not given. A plain column rather than a generated one: SQLite cannot
    # copy a generated column, so Alembic's batch mode could no longer recreate this table.
    story_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_story_at, index=True)

    tags: Mapped[list[ArticleTag]] = relationship(
        back_populates="article", cascade="all, delete-orphan", order_by="ArticleTag.topic"
    )


def _article_story_at(context: ExecutionContext) -> datetime:
    """The tagged article's story time, read in the same transaction (see ArticleTag.story_at)."""
    connection: Connection = context.connection
    article_id = context.get_current_parameters()["article_id"]
    return connection.execute(select(Article.story_at).where(Article.id == article_id)).scalar_one()


class ArticleTag(Base):
    __tablename__ = "article_tags"
    __table_args__ = (
        UniqueConstraint("article_id", "topic"),
        # One topic's counts over a period are a range scan of this index alone (article_id makes
        # it covering for the breakdowns that join articles).
        Index("ix_article_tags_topic_story_at", "topic", "story_at", "article_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(32), index=True)
    score: Mapped[float] = mapped_column(Float)
    # [{"term", "field", "start", "end"}]: why the tag was given, with offsets into the field.
    evidence: Mapped[list[dict[str, object]]] = mapped_column(JSONType)
    tagger_version: Mapped[str] = mapped_column(String(32))
    tagged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A copy of articles.story_at so that trends need no join. Filled from the article on insert
    # when not given; marsad.store.refresh_tag_story_times keeps it in step when a date changes.
    story_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_article_story_at)

    article: Mapped[Article] = relationship(back_populates="tags")


class StoryBand(Base):
    """Locality-sensitive hashing bands of an article's MinHash: articles sharing one are candidates."""

    __tablename__ = "story_bands"

    band_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
