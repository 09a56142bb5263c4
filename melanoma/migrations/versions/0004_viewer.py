"""viewer: Grad-CAM heat maps cached per content and model version; keyset index for a job's grid

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 04:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'heatmaps',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('model_version', sa.String(length=100), nullable=False),
        sa.Column('class_name', sa.String(length=40), nullable=False),
        sa.Column('png', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sha256', 'model_version', name='uq_heatmaps_sha_model'),
    )
    # The viewer's default order: a job's images by P(melanoma), highest first (keyset pagination).
    op.create_index('ix_predictions_job_melanoma', 'predictions', ['job_id', 'p_melanoma', 'id'])


def downgrade() -> None:
    op.drop_index('ix_predictions_job_melanoma', table_name='predictions')
    op.drop_table('heatmaps')
