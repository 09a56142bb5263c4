"""predictions.writes: how many times a worker wrote the row's result (1 when each image is scored once)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 15:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.add_column(sa.Column('writes', sa.Integer(), server_default='0', nullable=False))
    # Rows scored before this column existed were written once.
    op.execute("UPDATE predictions SET writes = 1 WHERE status != 'pending'")


def downgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.drop_column('writes')
