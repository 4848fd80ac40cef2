"""Risk-level policies: the thresholds of the blue / yellow / red warning levels, configurable.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 04:00:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from infra.db import UtcDateTime

revision: str = '0007'
down_revision: Union[str, None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'risk_policies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('yellow_churn_score', sa.Double(), nullable=False),
        sa.Column('red_churn_score', sa.Double(), nullable=False),
        sa.Column('inactive_months', sa.Integer(), nullable=False),
        sa.Column('consecutive_downgrades', sa.Integer(), nullable=False),
        sa.Column('unresolved_complaints', sa.Integer(), nullable=False),
        sa.Column('complaint_surge_90d', sa.Integer(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint('yellow_churn_score >= 0 AND yellow_churn_score <= red_churn_score '
                           'AND red_churn_score <= 1', name=op.f('ck_risk_policies_churn_scores_ordered')),
        sa.CheckConstraint('inactive_months >= 1 AND consecutive_downgrades >= 1 AND unresolved_complaints >= 1 '
                           'AND complaint_surge_90d >= 1', name=op.f('ck_risk_policies_signal_thresholds_positive')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_policies')),
        sa.UniqueConstraint('code', name=op.f('uq_risk_policies_code')),
    )


def downgrade() -> None:
    op.drop_table('risk_policies')
