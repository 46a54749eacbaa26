from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow
from models.types import JSONType, UTCDateTime


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class IngestRun(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    feeds_polled: Mapped[int] = mapped_column(Integer, default=0)
    feeds_ok: Mapped[int] = mapped_column(Integer, default=0)
    feeds_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    feeds_failed: Mapped[int] = mapped_column(Integer, default=0)
    articles_new: Mapped[int] = mapped_column(Integer, default=0)
    articles_stored: Mapped[int] = mapped_column(Integer, default=0)
    # {reason: count} over feeds, items and pages.
    failures: Mapped[dict[str, int] | None] = mapped_column(JSONType)
    # {stage: wall seconds} summed over batches (poll, parse, record, claim, fetch, extract, ...).
    stage_seconds: Mapped[dict[str, float] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
