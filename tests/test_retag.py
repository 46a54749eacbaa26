"""Re-tagging stored articles: only what changed is written, and versions say who tagged what."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from marsad.cli import app
from marsad.db import session_scope
from marsad.retag import retag_batch
from marsad.tagging import get_tagger
from models import Article, ArticleTag
from webdata import ARABIC_PARAGRAPHS, ENGLISH_PARAGRAPHS

OFF_TOPIC = (
    "The national football team won its qualifier on Tuesday with two late goals, and thousands of "
    "supporters celebrated in the streets of the capital until the early hours."
)
NOW = datetime(2026, 11, 10, 9, 0, tzinfo=timezone.utc)


def seed(engine: Engine) -> dict[str, int]:
    """Three articles tagged by an older taxonomy: one stale, one untagged, one still right."""
    tagger = get_tagger()
    current = tagger.tag("Desert raid", " ".join(ENGLISH_PARAGRAPHS)).to_dict()["topics"]
    with session_scope(engine) as session:
        stale = Article(canonical_url="https://a.example/1", url="https://a.example/1", title="Desert raid",
                        text=" ".join(ENGLISH_PARAGRAPHS), language="en", published_at=NOW, tagged_with="old")
        untagged = Article(canonical_url="https://a.example/2", url="https://a.example/2", title="Football",
                           text=OFF_TOPIC, language="en", published_at=NOW, tagged_with="old")
        right = Article(canonical_url="https://a.example/3", url="https://a.example/3", title="Desert raid",
                        text=" ".join(ENGLISH_PARAGRAPHS), language="en", published_at=NOW, tagged_with="old",
                        places=list(tagger.tag("Desert raid", " ".join(ENGLISH_PARAGRAPHS)).places),
                        actors=list(tagger.tag("Desert raid", " ".join(ENGLISH_PARAGRAPHS)).actors))
        arabic = Article(canonical_url="https://a.example/4", url="https://a.example/4", title="اتفاق أمني",
                         text=" ".join(ARABIC_PARAGRAPHS), language="ar",
                         published_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
        session.add_all([stale, untagged, right, arabic])
        session.flush()
        session.add_all([
            ArticleTag(article_id=stale.id, topic="isis", score=0.1, evidence=[], tagger_version="old"),
            ArticleTag(article_id=stale.id, topic="coalition", score=0.9, evidence=[], tagger_version="old"),
        ] + [
            ArticleTag(article_id=right.id, topic=t["topic"], score=t["score"], evidence=t["evidence"],
                       tagger_version="old")
            for t in current
        ])
        return {"stale": stale.id, "untagged": untagged.id, "right": right.id, "arabic": arabic.id}


def tags(engine: Engine, article_id: int) -> dict[str, str]:
    with session_scope(engine) as session:
        return {t.topic: t.tagger_version for t in session.scalars(
            select(ArticleTag).where(ArticleTag.article_id == article_id))}


def test_retag_rewrites_only_what_changed(engine: Engine) -> None:
    ids = seed(engine)
    version = get_tagger().version

    first = retag_batch(engine, get_tagger(), after_id=0, limit=2)
    rest = retag_batch(engine, get_tagger(), after_id=first.last_id, limit=2)
    done = retag_batch(engine, get_tagger(), after_id=rest.last_id, limit=2)

    assert (first.articles_checked, rest.articles_checked, done.articles_checked) == (2, 2, 0)
    assert tags(engine, ids["stale"]) == {"isis": version}  # stale score rewritten, coalition gone
    assert tags(engine, ids["untagged"]) == {}
    assert set(tags(engine, ids["right"]).values()) == {"old"}  # unchanged rows keep their version
    assert "regional_cooperation" in tags(engine, ids["arabic"])
    changed = first.articles_changed + rest.articles_changed
    assert changed == 2  # the stale one and the Arabic one; "right" and "untagged" were left alone
    assert first.tags_removed == 1 and first.tags_updated == 1
    with session_scope(engine) as session:
        assert set(session.scalars(select(Article.tagged_with))) == {version}

    again = retag_batch(engine, get_tagger(), after_id=0, limit=10)
    assert again.articles_checked == 4 and again.articles_changed == 0


def test_retag_since_leaves_older_articles_alone(engine: Engine) -> None:
    ids = seed(engine)
    report = retag_batch(engine, get_tagger(), after_id=0, since=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert report.articles_checked == 3
    assert tags(engine, ids["arabic"]) == {}


@pytest.mark.usefixtures("prefect_harness")
def test_retag_command_runs_the_flow(engine: Engine) -> None:
    ids = seed(engine)
    result = CliRunner().invoke(app, ["retag", "--since", "2026-01-01"])
    assert result.exit_code == 0, result.stderr
    assert "3 articles checked, 1 changed (0 tags added, 1 updated, 1 removed)" in result.stderr
    assert tags(engine, ids["arabic"]) == {}
    bad = CliRunner().invoke(app, ["retag", "--since", "last week"])
    assert bad.exit_code == 1 and "--since must be a date" in bad.stderr


def test_title_only_articles_are_retagged_too(engine: Engine) -> None:
    with session_scope(engine) as session:
        article = Article(canonical_url="https://a.example/t", url="https://a.example/t",
                          title="ISIS cell kills three soldiers in Deir ez-Zor ambush", published_at=NOW)
        session.add(article)
        session.flush()
        article_id = article.id
    report = retag_batch(engine, get_tagger(), after_id=0)
    assert report.articles_checked == 1
    assert "isis" in tags(engine, article_id)
