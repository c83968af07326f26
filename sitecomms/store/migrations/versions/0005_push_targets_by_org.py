"""push_subscriptions indexed by (org_id, id): a broadcast's devices read a page at a time, in order

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_push_subscriptions_org_id"))
        batch_op.create_index(batch_op.f("ix_push_subscriptions_org_id_id"), ["org_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_push_subscriptions_org_id_id"))
        batch_op.create_index(batch_op.f("ix_push_subscriptions_org_id"), ["org_id"], unique=False)
