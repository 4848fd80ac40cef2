"""Decisions keep their answer as ``json`` text, compressed with lz4 where PostgreSQL has it.

The answer (about 2.6 KB with its reasons) is only ever read back whole: for a replayed
request and for ``GET /api/v1/decisions/<id>``. As ``jsonb`` every insert paid to build the
binary form and then to compress it with pglz: about two thirds of the database's time for a
bulk call's write (150 ms per 2,000 rows, against 64 ms as lz4-compressed ``json``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 00:10:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: Union[str, None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _lz4_available() -> bool:
    """PostgreSQL 14+ built with lz4 (Debian's and the official images are)."""
    bind = op.get_bind()
    if bind.dialect.server_version_info < (14,):
        return False
    return bool(bind.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
        "AND 'lz4' = ANY(enumvals))")).scalar())


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite stores JSON as text already
    op.alter_column('decisions', 'response', type_=sa.JSON(), existing_nullable=False,
                    postgresql_using='response::json')
    if _lz4_available():
        op.execute('ALTER TABLE decisions ALTER COLUMN response SET COMPRESSION lz4')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    if _lz4_available():
        op.execute('ALTER TABLE decisions ALTER COLUMN response SET COMPRESSION default')
    op.alter_column('decisions', 'response', type_=postgresql.JSONB(astext_type=sa.Text()),
                    existing_nullable=False, postgresql_using='response::jsonb')
