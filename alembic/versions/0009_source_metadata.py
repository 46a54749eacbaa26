"""feeds carry their outlet's country, type and homepage

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0009'
down_revision: Union[str, None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


# Plain ALTER TABLE, not batch mode: a batch copy of `feeds` on SQLite would trip over the views
# of 0005 that read it.


def upgrade() -> None:
    op.add_column("feeds", sa.Column("country", sa.String(length=8), nullable=True))
    op.add_column("feeds", sa.Column("source_type", sa.String(length=16), nullable=True))
    op.add_column("feeds", sa.Column("homepage", sa.String(length=2048), nullable=True))
    op.create_index("ix_feeds_source_type", "feeds", ["source_type"])


def downgrade() -> None:
    op.drop_index("ix_feeds_source_type", table_name="feeds")
    op.drop_column("feeds", "homepage")
    op.drop_column("feeds", "source_type")
    op.drop_column("feeds", "country")
