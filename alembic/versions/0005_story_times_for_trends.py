"""story times for trends, and views for analysts

An article's story time is when it was published, or first seen when undated:
``articles.story_at = coalesce(published_at, discovered_at)``, written by the ingest together with
``published_at``, and copied to ``article_tags.story_at`` so that one topic's counts over a period
are a range scan of the index ``(topic, story_at, article_id)`` with no join. Existing rows are
backfilled here.

The views group by day in the *session's* time zone: PostgreSQL's ``TimeZone`` setting
(``SET TIME ZONE 'Asia/Baghdad'``), and on SQLite the local time of the computer running the query
(``TZ``). See docs/queries.md.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 02:10:33.918589

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

VIEWS = ("article_topics", "daily_topic_counts", "daily_source_counts", "daily_place_counts")

# feed name, else the page's site name, else the feed's URL (as the trends breakdown by source)
SOURCE = "coalesce(nullif(f.name, ''), nullif(a.site_name, ''), f.url)"


def _views(dialect: str) -> dict[str, str]:
    if dialect == "postgresql":
        def day(column: str) -> str:
            return f"CAST({column} AT TIME ZONE current_setting('TimeZone') AS date)"

        places = (
            "CROSS JOIN LATERAL jsonb_array_elements_text("
            "CASE WHEN jsonb_typeof(a.places) = 'array' THEN a.places ELSE '[]'::jsonb END) AS p(place)"
        )
        place, place_filter = "p.place", ""
    else:
        def day(column: str) -> str:
            return f"date({column}, 'localtime')"

        places = "JOIN json_each(CASE WHEN json_type(a.places) = 'array' THEN a.places ELSE '[]' END) AS p"
        place, place_filter = "p.value", "WHERE p.type = 'text'"
    return {
        "article_topics": f"""
            SELECT a.id AS article_id, t.topic, t.score, a.story_at, {day('a.story_at')} AS day,
                   {SOURCE} AS source, a.language, a.title, a.canonical_url AS url, a.cluster_id
            FROM articles a
            LEFT JOIN article_tags t ON t.article_id = a.id
            LEFT JOIN feeds f ON f.id = a.feed_id""",
        "daily_topic_counts": f"""
            SELECT {day('t.story_at')} AS day, t.topic, count(*) AS articles
            FROM article_tags t
            GROUP BY 1, 2""",
        "daily_source_counts": f"""
            SELECT {day('t.story_at')} AS day, {SOURCE} AS source, t.topic, count(*) AS articles
            FROM article_tags t
            JOIN articles a ON a.id = t.article_id
            LEFT JOIN feeds f ON f.id = a.feed_id
            GROUP BY 1, 2, 3""",
        "daily_place_counts": f"""
            SELECT {day('t.story_at')} AS day, {place} AS place, t.topic, count(*) AS articles
            FROM article_tags t
            JOIN articles a ON a.id = t.article_id
            {places}
            {place_filter}
            GROUP BY 1, 2, 3""",
    }


def _add_story_at(table: str, backfill: str) -> None:
    """Add ``table.story_at`` NOT NULL, filled by ``backfill``, without copying the table.

    SQLite cannot make a column NOT NULL in place, and copying articles in batch mode would drop
    the old table, which with foreign keys on deletes every tag, band and digest item through
    ON DELETE CASCADE. So on SQLite the column is added NOT NULL with a placeholder default that
    the backfill overwrites (Marsad always writes the column; the placeholder stays in SQLite's
    schema, unused); PostgreSQL adds it nullable, backfills, then sets NOT NULL.
    """
    if op.get_bind().dialect.name == "sqlite":
        op.add_column(table, sa.Column('story_at', sa.DateTime(timezone=True), nullable=False,
                                       server_default=sa.text("'1970-01-01 00:00:00.000000'")))
        op.execute(backfill)
    else:
        op.add_column(table, sa.Column('story_at', sa.DateTime(timezone=True), nullable=True))
        op.execute(backfill)
        op.alter_column(table, 'story_at', existing_type=sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    _add_story_at("articles", "UPDATE articles SET story_at = coalesce(published_at, discovered_at)")
    op.create_index(op.f('ix_articles_story_at'), 'articles', ['story_at'], unique=False)
    _add_story_at(
        "article_tags",
        "UPDATE article_tags SET story_at = "
        "(SELECT a.story_at FROM articles a WHERE a.id = article_tags.article_id)",
    )
    op.create_index('ix_article_tags_topic_story_at', 'article_tags', ['topic', 'story_at', 'article_id'], unique=False)

    # Views last: on SQLite a later batch migration that copies articles, article_tags or feeds
    # must drop these views first and create them again after (alembic issue #1207).
    for name, sql in _views(op.get_bind().dialect.name).items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index('ix_article_tags_topic_story_at', table_name='article_tags')
    op.drop_index(op.f('ix_articles_story_at'), table_name='articles')
    # In place (SQLite 3.35+): copying articles would cascade-delete its tags, as above.
    op.execute("ALTER TABLE article_tags DROP COLUMN story_at")
    op.execute("ALTER TABLE articles DROP COLUMN story_at")
