"""Decisions (the ledger of record) and their budget charges.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 19:00:12.062230
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import infra.db
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: Union[str, None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('decisions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('caller', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('subscriber_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('tier', sa.String(length=64), nullable=True),
    sa.Column('risk_level', sa.String(length=10), nullable=False),
    sa.Column('experiment_key', sa.String(length=64), nullable=True),
    sa.Column('arm_key', sa.String(length=64), nullable=True),
    sa.Column('in_holdout', sa.Boolean(), nullable=False),
    sa.Column('assignment_id', sa.BigInteger(), nullable=True),
    sa.Column('offer_code', sa.String(length=64), nullable=True),
    sa.Column('cost', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('probability', sa.Double(), nullable=False),
    sa.Column('degraded', sa.Boolean(), nullable=False),
    sa.Column('snapshot_version', sa.BigInteger(), nullable=False),
    sa.Column('response', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions')),
    sa.UniqueConstraint('caller', 'request_id', name=op.f('uq_decisions_caller_request_id'))
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_subscriber_id_created_at', ['subscriber_id', 'created_at'], unique=False)

    op.create_table('budget_charges',
    sa.Column('decision_id', sa.String(length=32), nullable=False),
    sa.Column('budget_code', sa.String(length=64), nullable=False),
    sa.Column('period_key', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_budget_charges_decision_id_decisions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('decision_id', 'budget_code', name=op.f('pk_budget_charges'))
    )
    with op.batch_alter_table('budget_charges', schema=None) as batch_op:
        batch_op.create_index('ix_budget_charges_budget_code_period_key', ['budget_code', 'period_key'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('budget_charges', schema=None) as batch_op:
        batch_op.drop_index('ix_budget_charges_budget_code_period_key')

    op.drop_table('budget_charges')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_decisions_subscriber_id_created_at')

    op.drop_table('decisions')
