"""adaptive polling

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


# Plain ALTER TABLE, not batch mode: a batch copy of `feeds` on SQLite would trip over the views
# of 0005 that read it. SQLite >= 3.35 drops columns in place.


def upgrade() -> None:
    op.add_column("feeds", sa.Column("poll_interval_minutes", sa.Float(), nullable=True))
    op.add_column("feeds", sa.Column("feed_hint_minutes", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("feeds", "feed_hint_minutes")
    op.drop_column("feeds", "poll_interval_minutes")
