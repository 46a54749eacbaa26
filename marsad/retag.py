"""Re-tag stored articles with the current taxonomy, writing only what changed.

A tag that comes out the same keeps its row, and with it the taxonomy version that first gave it;
a changed tag is rewritten with the new version; a tag no longer given is removed. Every article
checked records the version that checked it (``articles.tagged_with``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session, selectinload

from marsad import store
from marsad.db import session_scope
from marsad.tagging import Tagger
from models import Article, utcnow

RETAG_BATCH = 500


@dataclass
class RetagReport:
    articles_checked: int = 0
    articles_changed: int = 0
    tags_added: int = 0
    tags_updated: int = 0
    tags_removed: int = 0
    last_id: int = 0

    def add(self, other: RetagReport) -> None:
        for name in ("articles_checked", "articles_changed", "tags_added", "tags_updated", "tags_removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.last_id = max(self.last_id, other.last_id)

    def as_log_line(self, version: str) -> str:
        return (
            f"retag with taxonomy {version}: {self.articles_checked} articles checked, "
            f"{self.articles_changed} changed ({self.tags_added} tags added, "
            f"{self.tags_updated} updated, {self.tags_removed} removed)"
        )


def retag_batch(
    engine: Engine,
    tagger: Tagger,
    *,
    after_id: int,
    since: datetime | None = None,
    limit: int = RETAG_BATCH,
) -> RetagReport:
    """Re-tag the next ``limit`` stored articles after ``after_id`` (by id) in one transaction."""
    report = RetagReport(last_id=after_id)
    now = utcnow()
    with session_scope(engine) as session:
        query = (
            select(Article)
            .options(selectinload(Article.tags))
            # Title-only articles were tagged at ingest too: they are re-tagged like the rest.
            .where(Article.id > after_id, or_(Article.text.is_not(None), Article.title.is_not(None)))
            .order_by(Article.id)
            .limit(limit)
        )
        if since is not None:
            query = query.where(Article.story_at >= since)
        for article in session.scalars(query):
            report.last_id = article.id
            report.articles_checked += 1
            result = tagger.tag(article.title, article.text, article.language)
            if _apply(session, article, result.to_dict(), tagger.version, now, report):
                report.articles_changed += 1
    return report


def _apply(
    session: Session,
    article: Article,
    tagged: dict[str, Any],
    version: str,
    now: datetime,
    report: RetagReport,
) -> bool:
    changes = store.write_tags(
        session, article.id, tagged["topics"], version, now, existing=article.tags
    )
    report.tags_added += changes.added
    report.tags_updated += changes.updated
    report.tags_removed += changes.removed
    values: dict[str, Any] = {}
    if list(article.places or []) != list(tagged["places"]):
        values["places"] = list(tagged["places"])
    if list(article.actors or []) != list(tagged["actors"]):
        values["actors"] = list(tagged["actors"])
    changed = changes.any or bool(values)
    if article.tagged_with != version:
        values["tagged_with"] = version
    if values:
        session.execute(
            update(Article).where(Article.id == article.id).values(**values),
            execution_options={"synchronize_session": False},
        )
    return changed
