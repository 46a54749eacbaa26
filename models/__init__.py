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
from models.feed import FetchEvent, Feed
from models.run import IngestRun, RunStatus

__all__ = [
    "RETRYABLE_STATUSES",
    "Article",
    "ArticleTag",
    "Base",
    "DateSource",
    "ExtractionStatus",
    "FetchEvent",
    "Feed",
    "IngestRun",
    "RunStatus",
    "StoryBand",
    "utcnow",
]
