"""Readouts, promotions and alerts; per-experiment readout interval, winner and spending pause.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:12:09.286227
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import infra.db
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('readouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('data_cutoff', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('inputs_hash', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=20), nullable=False),
    sa.Column('status_at_readout', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('eligible', sa.Boolean(), nullable=False),
    sa.Column('results', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('computed_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("method IN ('conjugate', 'hierarchical')", name=op.f('ck_readouts_method')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_readouts_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_readouts')),
    sa.UniqueConstraint('experiment_id', 'data_cutoff', 'model_version', name=op.f('uq_readouts_experiment_id_data_cutoff_model_version'))
    )
    with op.batch_alter_table('readouts', schema=None) as batch_op:
        batch_op.create_index('ix_readouts_experiment_id_computed_at', ['experiment_id', 'computed_at'], unique=False)

    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('readout_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', infra.db.UtcDateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=200), nullable=True),
    sa.CheckConstraint("kind IN ('roi_alarm')", name=op.f('ck_alerts_kind')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_alerts_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['readout_id'], ['readouts.id'], name=op.f('fk_alerts_readout_id_readouts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
    sa.UniqueConstraint('experiment_id', 'kind', 'readout_id', name=op.f('uq_alerts_experiment_id_kind_readout_id'))
    )
    op.create_table('promotions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('readout_id', sa.Integer(), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=False),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('winner_arm_key', sa.String(length=64), nullable=False),
    sa.Column('tier_winners', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_promotions_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['readout_id'], ['readouts.id'], name=op.f('fk_promotions_readout_id_readouts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions')),
    sa.UniqueConstraint('experiment_id', 'from_status', 'to_status', name=op.f('uq_promotions_experiment_id_from_status_to_status'))
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        # existing experiments get the defaults: read out hourly, spending not paused
        batch_op.add_column(sa.Column('readout_interval_minutes', sa.Integer(), nullable=False,
                                      server_default='60'))
        batch_op.add_column(sa.Column('winner_arm_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('tier_winners', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('promoted_at', infra.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('spending_paused', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.create_check_constraint(op.f('ck_experiments_readout_interval_minutes_min'),
                                         'readout_interval_minutes >= 5')
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        # the defaults were for existing rows only; new rows get theirs from the application
        batch_op.alter_column('readout_interval_minutes', server_default=None)
        batch_op.alter_column('spending_paused', server_default=None)



def downgrade() -> None:
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_experiments_readout_interval_minutes_min'), type_='check')
        batch_op.drop_column('spending_paused')
        batch_op.drop_column('promoted_at')
        batch_op.drop_column('tier_winners')
        batch_op.drop_column('winner_arm_key')
        batch_op.drop_column('readout_interval_minutes')

    op.drop_table('promotions')
    op.drop_table('alerts')
    with op.batch_alter_table('readouts', schema=None) as batch_op:
        batch_op.drop_index('ix_readouts_experiment_id_computed_at')

    op.drop_table('readouts')
