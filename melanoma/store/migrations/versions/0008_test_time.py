"""predictions.test_time: how an image was scored when not as one plain view (views, scales)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 01:45:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows scored before this were scored as one plain view: NULL says exactly that.
    with op.batch_alter_table('predictions') as batch:
        batch.add_column(sa.Column('test_time', sa.String(length=60), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.drop_column('test_time')
