from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow
from models.types import JSONType, UTCDateTime


class SourceType(StrEnum):
    INDEPENDENT = "independent"
    STATE = "state"
    WIRE = "wire"
    OFFICIAL = "official"
    RESEARCH = "research"


class Feed(Base):
    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    name: Mapped[str | None] = mapped_column(String(300))
    language: Mapped[str | None] = mapped_column(String(16))
    # The outlet behind the feed: where it is based, what kind of source it is (SOURCE_TYPES),
    # its front page. Analysts weigh a state agency's report differently from a wire's.
    country: Mapped[str | None] = mapped_column(String(8))
    source_type: Mapped[str | None] = mapped_column(String(16), index=True)
    homepage: Mapped[str | None] = mapped_column(String(2048))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # HTTP validators and a hash of the last body: an unchanged feed costs no parsing and no writes.
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    body_hash: Mapped[str | None] = mapped_column(String(64))
    # A run claims a feed by moving next_poll_at forward, so overlapping runs never poll it twice;
    # backoff and Retry-After push it further.
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    error_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Adaptive polling: the wait after a successful poll, shortened when the feed brought new
    # items and lengthened when it did not; never below what the feed asks (RSS ttl, sy:update*).
    poll_interval_minutes: Mapped[float | None] = mapped_column(Float)
    feed_hint_minutes: Mapped[float | None] = mapped_column(Float)
    last_status: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FetchEvent(Base):
    """One poll of one feed in one run: what an operator reads to see why a feed is failing."""

    __tablename__ = "fetch_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_runs.id", ondelete="SET NULL"), index=True
    )
    feed_id: Mapped[int] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    items_seen: Mapped[int] = mapped_column(Integer, default=0)
    items_new: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Item-level problems (bad links, missing GUIDs...) counted by reason.
    item_failures: Mapped[dict[str, int] | None] = mapped_column(JSONType)
