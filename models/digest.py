from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow
from models.types import JSONType, UTCDateTime


class DigestStatus(StrEnum):
    PENDING = "pending"  # built; not delivered yet, or an attempt failed and the next run retries
    SENDING = "sending"  # an attempt is under way; a crash leaves it here, read as UNKNOWN later
    UNKNOWN = "unknown"  # the connection dropped after DATA: the server may have it; retried once
    SENT = "sent"  # accepted by the SMTP server, or written to the outbox when there is none
    FAILED = "failed"  # refused for good (5xx), or unknown twice: an operator must look
    EMPTY = "empty"  # nothing new in the period, and no "nothing new" note was asked for


DAILY = "daily"

# Statuses a later run delivers.
UNDELIVERED_STATUSES = (DigestStatus.PENDING, DigestStatus.SENDING, DigestStatus.UNKNOWN)


class Digest(Base):
    """One recipient's digest for one day: built once, then delivered at most once.

    The message is stored as built, so a retry sends the same bytes with the same Message-ID and a
    receiving server can drop a copy it already has.
    """

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("recipient", "digest_date", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    digest_date: Mapped[date] = mapped_column(Date)
    # "daily", or "spike:<topic>" for an alert sent at once when a topic spikes. Only daily digests
    # carry articles: an alert's stories still come in the next daily digest.
    kind: Mapped[str] = mapped_column(String(40), default=DAILY, server_default=DAILY)
    # What arrived in [period_start, period_end) and was in no earlier digest of this recipient.
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    topics: Mapped[list[str]] = mapped_column(JSONType)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    subject: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=DigestStatus.PENDING, index=True)
    story_count: Mapped[int] = mapped_column(Integer, default=0)
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    transport: Mapped[str | None] = mapped_column(String(16))  # "smtp" or "outbox"
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    unknown_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DigestItem(Base):
    """An article a digest carried (shown, counted under "more", or a late copy of a story already
    sent): a recipient's later digests never carry it again."""

    __tablename__ = "digest_items"

    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Subscription(Base):
    """A digest recipient and the topics they follow (None: every topic)."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    topics: Mapped[list[str] | None] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
