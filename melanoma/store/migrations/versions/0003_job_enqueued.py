"""jobs.enqueued: how many of the job's images the producer has put on the queue

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 01:50:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enqueued', sa.Integer(), nullable=False, server_default='0'))
    # Jobs submitted before this column existed were queued whole.
    op.execute("UPDATE jobs SET enqueued = n_images")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('enqueued')
