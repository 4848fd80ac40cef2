"""Catalogue (offers, tiers, policies, budgets, subscribers), users, API keys, audit log.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 15:50:56.314689
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import infra.db
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('occurred_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=300), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('entity_type', sa.String(length=60), nullable=False),
    sa.Column('entity_key', sa.String(length=200), nullable=False),
    sa.Column('before', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('after', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_entity', ['entity_type', 'entity_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('budgets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('period', sa.String(length=10), nullable=False),
    sa.Column('cap_amount', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('cap_share_of_revenue', sa.Double(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('scope_type', sa.String(length=20), nullable=False),
    sa.Column('scope_value', sa.String(length=64), nullable=True),
    sa.Column('roi_floor', sa.Double(), nullable=False),
    sa.Column('max_cost_share_of_ltv', sa.Double(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(cap_amount IS NULL) <> (cap_share_of_revenue IS NULL)', name=op.f('ck_budgets_one_cap')),
    sa.CheckConstraint('cap_amount IS NULL OR cap_amount >= 0', name=op.f('ck_budgets_cap_amount_non_negative')),
    sa.CheckConstraint('cap_share_of_revenue IS NULL OR (cap_share_of_revenue > 0 AND cap_share_of_revenue <= 1)', name=op.f('ck_budgets_cap_share_range')),
    sa.CheckConstraint('max_cost_share_of_ltv > 0 AND max_cost_share_of_ltv <= 1', name=op.f('ck_budgets_ltv_share_range')),
    sa.CheckConstraint('roi_floor >= 0', name=op.f('ck_budgets_roi_floor_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets')),
    sa.UniqueConstraint('code', name=op.f('uq_budgets_code'))
    )
    op.create_table('contact_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('max_contacts', sa.Integer(), nullable=False),
    sa.Column('window_days', sa.Integer(), nullable=False),
    sa.Column('quiet_start', sa.String(length=5), nullable=True),
    sa.Column('quiet_end', sa.String(length=5), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('max_contacts >= 0', name=op.f('ck_contact_policies_max_contacts_non_negative')),
    sa.CheckConstraint('window_days >= 1', name=op.f('ck_contact_policies_window_days_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_policies')),
    sa.UniqueConstraint('channel', name=op.f('uq_contact_policies_channel'))
    )
    op.create_table('offers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('unit_cost', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('channels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('eligibility', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('prior_uplift', sa.Double(), nullable=False),
    sa.Column('value_horizon_months', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('prior_uplift >= -1 AND prior_uplift <= 1', name=op.f('ck_offers_prior_uplift_range')),
    sa.CheckConstraint('unit_cost >= 0', name=op.f('ck_offers_unit_cost_non_negative')),
    sa.CheckConstraint('value_horizon_months >= 1', name=op.f('ck_offers_value_horizon_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offers')),
    sa.UniqueConstraint('code', name=op.f('uq_offers_code'))
    )
    op.create_table('subscribers',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('tier', sa.String(length=64), nullable=True),
    sa.Column('tiers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('arpu', sa.Double(), nullable=True),
    sa.Column('ltv', sa.Double(), nullable=True),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscribers'))
    )
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.create_index('ix_subscribers_tier', ['tier'], unique=False)

    op.create_table('tier_schemes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_schemes')),
    sa.UniqueConstraint('code', name=op.f('uq_tier_schemes_code'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('admin', 'marketing', 'analyst')", name=op.f('ck_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=300), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', infra.db.UtcDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(kind = 'channel' AND channel IS NOT NULL AND user_id IS NULL) OR (kind = 'user' AND user_id IS NOT NULL AND channel IS NULL)", name=op.f('ck_api_keys_owner')),
    sa.CheckConstraint("kind IN ('channel', 'user')", name=op.f('ck_api_keys_kind')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_keys_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_table('tiers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('scheme_code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('rule', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['scheme_code'], ['tier_schemes.code'], name=op.f('fk_tiers_scheme_code_tier_schemes'), onupdate='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tiers')),
    sa.UniqueConstraint('code', name=op.f('uq_tiers_code')),
    sa.UniqueConstraint('scheme_code', 'rank', name=op.f('uq_tiers_scheme_code_rank'))
    )
    op.create_table('tier_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tier_code', sa.String(length=64), nullable=False),
    sa.Column('offer_code', sa.String(length=64), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('max_cost', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('granted_by', sa.String(length=32), nullable=False),
    sa.Column('context_weight', sa.Double(), nullable=False),
    sa.Column('lever', sa.Double(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', infra.db.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('context_weight >= 0', name=op.f('ck_tier_policies_context_weight_non_negative')),
    sa.CheckConstraint('lever >= 0', name=op.f('ck_tier_policies_lever_non_negative')),
    sa.CheckConstraint('max_cost IS NULL OR max_cost >= 0', name=op.f('ck_tier_policies_max_cost_non_negative')),
    sa.ForeignKeyConstraint(['offer_code'], ['offers.code'], name=op.f('fk_tier_policies_offer_code_offers'), onupdate='CASCADE'),
    sa.ForeignKeyConstraint(['tier_code'], ['tiers.code'], name=op.f('fk_tier_policies_tier_code_tiers'), onupdate='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_policies')),
    sa.UniqueConstraint('tier_code', 'offer_code', name=op.f('uq_tier_policies_tier_code_offer_code'))
    )

    if op.get_bind().dialect.name == "postgresql":
        # The audit log is append-only: the database itself refuses edits and deletions.
        op.execute("""
            CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
        """)

def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table('tier_policies')
    op.drop_table('tiers')
    op.drop_table('api_keys')
    op.drop_table('users')
    op.drop_table('tier_schemes')
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_index('ix_subscribers_tier')

    op.drop_table('subscribers')
    op.drop_table('offers')
    op.drop_table('contact_policies')
    op.drop_table('budgets')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_occurred_at'))
        batch_op.drop_index('ix_audit_log_entity')

    op.drop_table('audit_log')
