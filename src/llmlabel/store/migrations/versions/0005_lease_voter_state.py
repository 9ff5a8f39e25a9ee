"""leases indexed by voter and state, in place of by voter alone

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Every task request first looks for the annotator's live lease (voter, state 'active', not
expired). Through an index on the voter alone it read every lease the voter ever had, which
grew with their history: 3 us at 10 leases, 19 us at 100, 237 us at 1,000 (SQLite, measured),
and under load the server's votes/s fell by a quarter within two minutes. Indexed by voter,
state and expiry, it is 2.5 us at any history. The new index serves lookups by voter alone too.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index("ix_leases_voter_state", ["voter_id", "state", "expires_at"], unique=False)
        batch_op.drop_index("ix_leases_voter_id")


def downgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index("ix_leases_voter_id", ["voter_id"], unique=False)
        batch_op.drop_index("ix_leases_voter_state")
