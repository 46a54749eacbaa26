"""Re-tag stored articles with the current taxonomy, writing only what changed.

A tag that comes out the same keeps its row, and with it the taxonomy version that first gave it;
a changed tag is rewritten with the new version; a tag no longer given is removed. Every article
checked records the version that checked it (``articles.tagged_with``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from marsad import store
from marsad.db import session_scope
from marsad.tagging import Tagger
from models import Article, ArticleTag, utcnow

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
            query = query.where(func.coalesce(Article.published_at, Article.discovered_at) >= since)
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
    old = {tag.topic: tag for tag in article.tags}
    new = {tag["topic"]: tag for tag in tagged["topics"]}
    changed = False
    for topic in old.keys() - new.keys():
        session.execute(delete(ArticleTag).where(ArticleTag.id == old[topic].id))
        report.tags_removed += 1
        changed = True
    for topic, tag in new.items():
        current = old.get(topic)
        if current is None:
            session.execute(
                store.insert_ignoring_conflicts(session, ArticleTag),
                [{"article_id": article.id, "topic": topic, "score": float(tag["score"]),
                  "evidence": tag["evidence"], "tagger_version": version, "tagged_at": now}],
            )
            report.tags_added += 1
            changed = True
        elif not _same_tag(current, tag):
            session.execute(
                update(ArticleTag)
                .where(ArticleTag.id == current.id)
                .values(score=float(tag["score"]), evidence=tag["evidence"],
                        tagger_version=version, tagged_at=now)
            )
            report.tags_updated += 1
            changed = True
    values: dict[str, Any] = {}
    if list(article.places or []) != list(tagged["places"]):
        values["places"] = list(tagged["places"])
    if list(article.actors or []) != list(tagged["actors"]):
        values["actors"] = list(tagged["actors"])
    changed = changed or bool(values)
    if article.tagged_with != version:
        values["tagged_with"] = version
    if values:
        session.execute(
            update(Article).where(Article.id == article.id).values(**values),
            execution_options={"synchronize_session": False},
        )
    return changed


def _same_tag(row: ArticleTag, tag: dict[str, Any]) -> bool:
    return math.isclose(row.score, float(tag["score"]), abs_tol=1e-9) and _evidence_key(
        row.evidence
    ) == _evidence_key(tag["evidence"])


def _evidence_key(evidence: Sequence[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [(e.get("term"), e.get("field"), e.get("start"), e.get("end")) for e in evidence or []]
