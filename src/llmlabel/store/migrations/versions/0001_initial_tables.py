"""initial tables

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('config_hash', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('low', sa.Float(), nullable=True),
    sa.Column('high', sa.Float(), nullable=True),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('acknowledged_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_project_id'), ['project_id'], unique=False)

    op.create_table('items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('vote_count', sa.Integer(), nullable=False),
    sa.Column('votes_needed', sa.Integer(), nullable=False),
    sa.Column('next_kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('conflict_kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('final_label', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('decided_level', sa.Integer(), nullable=True),
    sa.Column('posterior', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'external_id')
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_queue', ['project_id', 'status', 'priority'], unique=False)

    op.create_table('llm_calls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('labeler', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('prompt_version', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('response', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('llm_calls', schema=None) as batch_op:
        batch_op.create_index('ix_llm_calls_cache', ['request_hash', 'outcome'], unique=False)
        batch_op.create_index(batch_op.f('ix_llm_calls_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_llm_calls_run_id'), ['run_id'], unique=False)

    op.create_table('project_configs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'hash')
    )
    with op.batch_alter_table('project_configs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_project_configs_project_id'), ['project_id'], unique=False)

    op.create_table('voters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'name')
    )
    with op.batch_alter_table('voters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_voters_project_id'), ['project_id'], unique=False)

    op.create_table('adjudications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('blind_label', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('conflict_kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.ForeignKeyConstraint(['reviewer_id'], ['voters.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('adjudications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adjudications_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adjudications_project_id'), ['project_id'], unique=False)

    op.create_table('gold',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('split', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id')
    )
    with op.batch_alter_table('gold', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gold_project_id'), ['project_id'], unique=False)

    op.create_table('leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('voter_id', sa.Integer(), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('is_human', sa.Boolean(), nullable=False),
    sa.Column('is_gold', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.ForeignKeyConstraint(['voter_id'], ['voters.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', 'voter_id'),
    sa.UniqueConstraint('token')
    )
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.create_index('ix_leases_active', ['project_id', 'state', 'expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_leases_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_leases_voter_id'), ['voter_id'], unique=False)

    op.create_table('votes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('voter_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('abstain_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('confidence_method', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('probs', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('rationale', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('prompt_version', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('unsure', sa.Boolean(), nullable=False),
    sa.Column('comment', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('predicted_distribution', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ),
    sa.ForeignKeyConstraint(['voter_id'], ['voters.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', 'voter_id')
    )
    with op.batch_alter_table('votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_votes_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_votes_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_votes_voter_id'), ['voter_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('votes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_votes_voter_id'))
        batch_op.drop_index(batch_op.f('ix_votes_project_id'))
        batch_op.drop_index(batch_op.f('ix_votes_item_id'))

    op.drop_table('votes')
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_leases_voter_id'))
        batch_op.drop_index(batch_op.f('ix_leases_item_id'))
        batch_op.drop_index('ix_leases_active')

    op.drop_table('leases')
    with op.batch_alter_table('gold', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gold_project_id'))

    op.drop_table('gold')
    with op.batch_alter_table('adjudications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adjudications_project_id'))
        batch_op.drop_index(batch_op.f('ix_adjudications_item_id'))

    op.drop_table('adjudications')
    with op.batch_alter_table('voters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_voters_project_id'))

    op.drop_table('voters')
    with op.batch_alter_table('project_configs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_project_configs_project_id'))

    op.drop_table('project_configs')
    with op.batch_alter_table('llm_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_llm_calls_run_id'))
        batch_op.drop_index(batch_op.f('ix_llm_calls_project_id'))
        batch_op.drop_index('ix_llm_calls_cache')

    op.drop_table('llm_calls')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_queue')

    op.drop_table('items')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_project_id'))

    op.drop_table('alerts')
    op.drop_table('projects')
