"""The configuration generation: one row, moved on in the transaction of every audited config
change, which every decision reads with the profiles (``infra.config_version``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 09:00:00
"""
from datetime import datetime, timezone
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from infra.db import UtcDateTime

revision: str = '0008'
down_revision: Union[str, None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    table = op.create_table(
        'config_generation',
        sa.Column('id', sa.SmallInteger(), nullable=False),
        sa.Column('generation', sa.BigInteger(), nullable=False),
        sa.Column('changed_at', UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_config_generation')),
    )
    op.bulk_insert(table, [{'id': 1, 'generation': 1, 'changed_at': datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.drop_table('config_generation')
