"""reviews, operating_points, audit_events; jobs.site; predictions.flag_threshold and flag_scope

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 21:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CLASSES = (
    "actinic keratosis", "basal cell carcinoma", "dermatofibroma", "melanoma", "nevus",
    "pigmented benign keratosis", "seborrheic keratosis", "squamous cell carcinoma", "vascular lesion", "other",
)
BASES = ("histopathology", "expert consensus", "follow-up")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('site', sa.String(100), nullable=True))
        batch.create_index('ix_jobs_site', ['site'])
    # Rows flagged before this were flagged at their version's own operating point.
    with op.batch_alter_table('predictions') as batch:
        batch.add_column(sa.Column('flag_threshold', sa.Float(), nullable=True))
        batch.add_column(sa.Column('flag_scope', sa.String(300), nullable=True))
    op.create_table(
        'reviews',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('sha256', sa.String(64), nullable=False),
        sa.Column('job_id', sa.String(32), sa.ForeignKey('jobs.id', ondelete='SET NULL'), nullable=True),
        sa.Column('image_path', sa.Text(), nullable=False),
        sa.Column('diagnosis', sa.String(40), nullable=False),
        sa.Column('basis', sa.String(30), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('reviewer', sa.String(100), nullable=False),
        sa.Column('via', sa.String(20), nullable=False),
        sa.Column('supersedes', BigId, sa.ForeignKey('reviews.id'), nullable=True, unique=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(_in('diagnosis', CLASSES), name='ck_reviews_diagnosis'),
        sa.CheckConstraint(_in('basis', BASES), name='ck_reviews_basis'),
    )
    op.create_index('ix_reviews_sha256', 'reviews', ['sha256'])
    op.create_index('ix_reviews_job_id', 'reviews', ['job_id'])
    op.create_table(
        'operating_points',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('scope', sa.String(300), nullable=False),
        sa.Column('model_version', sa.String(100), nullable=False),
        sa.Column('threshold', sa.Float(), nullable=False),
        sa.Column('target_sensitivity', sa.Float(), nullable=False),
        sa.Column('cases', sa.Integer(), nullable=False),
        sa.Column('melanomas', sa.Integer(), nullable=False),
        sa.Column('set_by', sa.String(100), nullable=False),
        sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('scope', 'model_version', name='uq_operating_points_scope_version'),
    )
    op.create_table(
        'audit_events',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(100), nullable=False),
        sa.Column('action', sa.String(40), nullable=False),
        sa.Column('target', sa.Text(), nullable=True),
        sa.Column('remote', sa.String(100), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
    )
    op.create_index('ix_audit_events_at', 'audit_events', ['at'])


def downgrade() -> None:
    op.drop_table('audit_events')
    op.drop_table('operating_points')
    op.drop_table('reviews')
    with op.batch_alter_table('predictions') as batch:
        batch.drop_column('flag_scope')
        batch.drop_column('flag_threshold')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index('ix_jobs_site')
        batch.drop_column('site')
