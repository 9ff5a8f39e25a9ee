"""votes.on_gold and a partial index of each voter's answers to gold

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Gating reads a voter's answers to gold items on every task request. Found by joining all of
the voter's votes with gold, that read grew with the voter's history (0.1 ms at 100 votes,
15 ms at 20,000, SQLite, measured); flagged and indexed, it grows with the gold answers only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("on_gold", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE votes SET on_gold = TRUE WHERE item_id IN (SELECT item_id FROM gold)")
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.create_index("ix_votes_gold_answers", ["voter_id", "id"], unique=False,
                              sqlite_where=sa.text("on_gold = 1"), postgresql_where=sa.text("on_gold"))


def downgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_index("ix_votes_gold_answers")
        batch_op.drop_column("on_gold")
