"""viewer: Grad-CAM heat maps cached per content and model version; indexes for a job's grid and summary

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

# Frozen here: a migration must not change when the code's class list does.
PROB_COLUMNS = (
    'p_actinic_keratosis',
    'p_basal_cell_carcinoma',
    'p_dermatofibroma',
    'p_melanoma',
    'p_nevus',
    'p_pigmented_benign_keratosis',
    'p_seborrheic_keratosis',
    'p_squamous_cell_carcinoma',
    'p_vascular_lesion',
)


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
    # The viewer's grid: a job's images by any class probability (keyset pagination).
    for col in PROB_COLUMNS:
        op.create_index(f'ix_predictions_job_{col}', 'predictions', ['job_id', col, 'id'])
    # Progress, class counts, flags and versions of a job from the index alone (a 100,000-image
    # job's summary without reading its rows); it covers what ix_predictions_job_status did.
    op.create_index(
        'ix_predictions_job_summary',
        'predictions',
        ['job_id', 'status', 'predicted_class', 'melanoma_flag', 'model_version'],
    )
    op.drop_index('ix_predictions_job_status', table_name='predictions')


def downgrade() -> None:
    op.create_index('ix_predictions_job_status', 'predictions', ['job_id', 'status'])
    op.drop_index('ix_predictions_job_summary', table_name='predictions')
    for col in PROB_COLUMNS:
        op.drop_index(f'ix_predictions_job_{col}', table_name='predictions')
    op.drop_table('heatmaps')
