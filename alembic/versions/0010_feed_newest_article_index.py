"""an index on articles (feed_id, discovered_at): each feed's newest article in one seek

Source health (``marsad status`` and the digest's footer) asks every feed for its newest article;
without this index that was a scan of all articles grouped by feed (about 2 s over a million
articles on SQLite). A plain CREATE INDEX on both backends: no batch copy of ``articles``, whose
full-text triggers and views (0006) a copy would lose.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22

"""
from typing import Sequence, Union

from alembic import op


revision: str = '0010'
down_revision: Union[str, None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index(
        "ix_articles_feed_id_discovered_at", "articles", ["feed_id", "discovered_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_articles_feed_id_discovered_at", table_name="articles")
