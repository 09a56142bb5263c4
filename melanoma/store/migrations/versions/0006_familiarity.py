"""predictions.familiarity and predictions.unfamiliar: how unlike the model's validation images each image is

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 18:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows scored before this stay NULL: "not measured", not "familiar".
    with op.batch_alter_table('predictions') as batch:
        batch.add_column(sa.Column('familiarity', sa.Float(), nullable=True))
        batch.add_column(sa.Column('unfamiliar', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.drop_column('unfamiliar')
        batch.drop_column('familiarity')
