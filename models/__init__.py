"""Marsad's SQLAlchemy 2 models: typed, declarative, no I/O."""

from models.article import (
    RETRYABLE_STATUSES,
    Article,
    ArticleTag,
    DateSource,
    ExtractionStatus,
    StoryBand,
)
from models.base import Base, utcnow
from models.digest import DAILY, UNDELIVERED_STATUSES, Digest, DigestItem, DigestStatus, Subscription
from models.feed import Feed, FetchEvent, SourceType
from models.run import IngestRun, RunStatus

__all__ = [
    "RETRYABLE_STATUSES",
    "Article",
    "ArticleTag",
    "Base",
    "DAILY",
    "DateSource",
    "Digest",
    "DigestItem",
    "DigestStatus",
    "ExtractionStatus",
    "FetchEvent",
    "Feed",
    "SourceType",
    "IngestRun",
    "RunStatus",
    "StoryBand",
    "Subscription",
    "UNDELIVERED_STATUSES",
    "utcnow",
]
