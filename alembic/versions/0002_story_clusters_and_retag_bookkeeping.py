"""story clusters and retag bookkeeping

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('story_bands',
    sa.Column('band_hash', sa.BigInteger(), nullable=False),
    sa.Column('article_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['article_id'], ['articles.id'], name=op.f('fk_story_bands_article_id_articles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('band_hash', 'article_id', name=op.f('pk_story_bands'))
    )
    with op.batch_alter_table('story_bands', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_story_bands_article_id'), ['article_id'], unique=False)

    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('minhash', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('tagged_with', sa.String(length=32), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.drop_column('tagged_with')
        batch_op.drop_column('minhash')

    with op.batch_alter_table('story_bands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_story_bands_article_id'))

    op.drop_table('story_bands')
