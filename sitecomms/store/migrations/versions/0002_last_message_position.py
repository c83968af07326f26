"""conversations.last_message_position: the newest message's stream position

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_message_position", sa.BigInteger(), nullable=True))
    # Existing conversations: the position of their newest message.
    op.execute(
        "UPDATE conversations SET last_message_position = "
        "(SELECT max(m.position) FROM messages m WHERE m.conversation_id = conversations.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_column("last_message_position")
