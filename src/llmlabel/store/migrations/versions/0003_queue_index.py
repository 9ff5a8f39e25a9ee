"""queue index in the claim's order

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

The claim orders open items by priority DESC, then id; most items share one priority, so an
index on (project_id, status, priority) left the database sorting by id on every claim.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_queue")
        batch_op.create_index("ix_items_queue", ["project_id", "status", sa.text("priority DESC"), "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_queue")
        batch_op.create_index("ix_items_queue", ["project_id", "status", "priority"], unique=False)
