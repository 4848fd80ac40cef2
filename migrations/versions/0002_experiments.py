"""Experiments, their arms and the history of their phases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:01:32.710726
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import infra.db
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('hypothesis', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('target', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('namespace', sa.String(length=64), nullable=True),
    sa.Column('namespace_start', sa.Double(), nullable=False),
    sa.Column('namespace_end', sa.Double(), nullable=False),
    sa.Column('coverage', sa.Double(), nullable=False),
    sa.Column('holdout_share', sa.Double(), nullable=False),
    sa.Column('hash_seed', sa.String(length=200), nullable=False),
    sa.Column('hash_version', sa.Integer(), nullable=False),
    sa.Column('bucket_version', sa.Integer(), nullable=False),
    sa.Column('phase', sa.Integer(), nullable=False),
    sa.Column('primary_metric', sa.String(length=20), nullable=False),
    sa.Column('guardrails', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('promotion_policy', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('budget_code', sa.String(length=64), nullable=True),
    sa.Column('started_at', infra.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', infra.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("primary_metric IN ('retained_d30', 'retained_d60', 'retained_d90')", name=op.f('ck_experiments_primary_metric')),
    sa.CheckConstraint("status IN ('draft', 'pilot', 'rollout', 'completed', 'stopped')", name=op.f('ck_experiments_status')),
    sa.CheckConstraint('bucket_version >= 1', name=op.f('ck_experiments_bucket_version_positive')),
    sa.CheckConstraint('coverage > 0 AND coverage <= 1', name=op.f('ck_experiments_coverage_range')),
    sa.CheckConstraint('hash_version IN (1, 2)', name=op.f('ck_experiments_hash_version')),
    sa.CheckConstraint('holdout_share >= 0 AND holdout_share <= 0.5', name=op.f('ck_experiments_holdout_share_range')),
    sa.CheckConstraint('namespace_start >= 0 AND namespace_start < namespace_end AND namespace_end <= 1', name=op.f('ck_experiments_namespace_range')),
    sa.CheckConstraint('phase >= 1', name=op.f('ck_experiments_phase_positive')),
    sa.ForeignKeyConstraint(['budget_code'], ['budgets.code'], name=op.f('fk_experiments_budget_code_budgets'), onupdate='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments')),
    sa.UniqueConstraint('key', name=op.f('uq_experiments_key'))
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.create_index('ix_experiments_status', ['status'], unique=False)

    op.create_table('experiment_arms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('offer_code', sa.String(length=64), nullable=True),
    sa.Column('weight', sa.Double(), nullable=False),
    sa.Column('is_control', sa.Boolean(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.CheckConstraint('position >= 0', name=op.f('ck_experiment_arms_position_non_negative')),
    sa.CheckConstraint('weight > 0', name=op.f('ck_experiment_arms_weight_positive')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_experiment_arms_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['offer_code'], ['offers.code'], name=op.f('fk_experiment_arms_offer_code_offers'), onupdate='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_arms')),
    sa.UniqueConstraint('experiment_id', 'key', name=op.f('uq_experiment_arms_experiment_id_key')),
    sa.UniqueConstraint('experiment_id', 'position', name=op.f('uq_experiment_arms_experiment_id_position'))
    )
    with op.batch_alter_table('experiment_arms', schema=None) as batch_op:
        batch_op.create_index('uq_experiment_arms_one_control', ['experiment_id'], unique=True, sqlite_where=sa.text('is_control'), postgresql_where=sa.text('is_control'))

    op.create_table('experiment_phases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.Integer(), nullable=False),
    sa.Column('hash_seed', sa.String(length=200), nullable=False),
    sa.Column('weights', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('coverage', sa.Double(), nullable=False),
    sa.Column('started_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('coverage > 0 AND coverage <= 1', name=op.f('ck_experiment_phases_coverage_range')),
    sa.CheckConstraint('phase >= 1', name=op.f('ck_experiment_phases_phase_positive')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_experiment_phases_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_phases')),
    sa.UniqueConstraint('experiment_id', 'phase', name=op.f('uq_experiment_phases_experiment_id_phase'))
    )


def downgrade() -> None:
    op.drop_table('experiment_phases')
    with op.batch_alter_table('experiment_arms', schema=None) as batch_op:
        batch_op.drop_index('uq_experiment_arms_one_control', sqlite_where=sa.text('is_control'), postgresql_where=sa.text('is_control'))

    op.drop_table('experiment_arms')
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index('ix_experiments_status')

    op.drop_table('experiments')
