"""Exposures (sticky first assignments) and the outcomes reported after them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:12:05.118204
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import infra.db

revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('assignments',
    sa.Column('id', BigId, nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.String(length=64), nullable=False),
    sa.Column('arm_key', sa.String(length=64), nullable=True),
    sa.Column('in_holdout', sa.Boolean(), nullable=False),
    sa.Column('phase', sa.Integer(), nullable=False),
    sa.Column('tier', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=True),
    sa.Column('first_exposed_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(arm_key IS NULL) = in_holdout', name=op.f('ck_assignments_arm_or_holdout')),
    sa.CheckConstraint('phase >= 1', name=op.f('ck_assignments_phase_positive')),
    sa.ForeignKeyConstraint(['experiment_id', 'arm_key'], ['experiment_arms.experiment_id', 'experiment_arms.key'], name='fk_assignments_arm_experiment_arms'),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_assignments_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assignments')),
    sa.UniqueConstraint('experiment_id', 'subscriber_id', name=op.f('uq_assignments_experiment_id_subscriber_id'))
    )
    op.create_table('outcomes',
    sa.Column('id', BigId, nullable=False),
    sa.Column('assignment_id', BigId, nullable=False),
    sa.Column('decision_id', sa.String(length=64), nullable=True),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Double(), nullable=True),
    sa.Column('day_n', sa.Integer(), nullable=True),
    sa.Column('day_key', sa.Integer(), sa.Computed("CASE WHEN type = 'retained' THEN day_n ELSE -1 END", persisted=True), nullable=False),
    sa.Column('occurred_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('received_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(type IN ('retained', 'churned')) = (day_n IS NOT NULL)", name=op.f('ck_outcomes_day_n_for_retained_and_churned')),
    sa.CheckConstraint("type <> 'revenue' OR value IS NOT NULL", name=op.f('ck_outcomes_revenue_has_value')),
    sa.CheckConstraint("type IN ('retained', 'churned', 'accepted', 'declined', 'delivered', 'revenue', 'complaint')", name=op.f('ck_outcomes_type')),
    sa.CheckConstraint('day_n >= 0', name=op.f('ck_outcomes_day_n_non_negative')),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'], name=op.f('fk_outcomes_assignment_id_assignments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outcomes')),
    sa.UniqueConstraint('assignment_id', 'type', 'day_key', name=op.f('uq_outcomes_assignment_id_type_day_key'))
    )


def downgrade() -> None:
    op.drop_table('outcomes')
    op.drop_table('assignments')
