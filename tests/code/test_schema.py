"""The Alembic migrations build exactly the ORM schema, on SQLite and on PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from melanoma.store import db
from melanoma.store.schema import Base


def _check(url):
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    db.ensure_schema(engine)  # a second call is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"migrations and ORM classes differ: {diff}"
    insp = inspect(engine)
    assert {"jobs", "predictions", "model_versions", "alembic_version"} <= set(insp.get_table_names())
    idx = {i["name"] for i in insp.get_indexes("predictions")}
    assert {
        "ix_predictions_job_summary",
        "ix_predictions_job_p_melanoma",
        "ix_predictions_job_p_nevus",
        "ix_predictions_melanoma_time",
        "ix_predictions_class_time",
        "ix_predictions_sha_model",
    } <= idx
    engine.dispose()


def test_migrations_match_models_sqlite(sqlite_url):
    _check(sqlite_url)


@pytest.mark.postgres
def test_migrations_match_models_postgres(pg_database):
    _check(pg_database)


def test_head_revision_constant_is_alembics_head(sqlite_url):
    # ensure_schema's fast path trusts db.HEAD_REVISION; a new migration must update it.
    assert db.HEAD_REVISION == db._head(db.make_engine(sqlite_url))
