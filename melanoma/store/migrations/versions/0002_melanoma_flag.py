"""melanoma_flag: P(melanoma) at or above the model version's operating point

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 15:30:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('melanoma_flag', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('melanoma_flag')
