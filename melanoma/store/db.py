"""Database engine, sessions and schema migrations (Alembic)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from melanoma.core.errors import one_line
from melanoma.core.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The newest migration's revision; tests/code/test_schema.py checks it against Alembic's head.
HEAD_REVISION = "0008"
# Arbitrary constant: the PostgreSQL advisory-lock key that serialises concurrent migrations.
_PG_MIGRATION_LOCK = 7_154_003_311


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their folder created, WAL and a busy timeout."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the producer read progress while a worker writes; foreign keys are off by default.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@lru_cache(maxsize=4)
def _engine_for(url: str, pid: int) -> Engine:
    return make_engine(url)


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: the configured database).

    Keyed by process id, so a forked worker child never reuses its parent's connections.
    """
    return _engine_for(url or get_settings().database_url, os.getpid())


def sessionmaker_for(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker_for(engine or get_engine())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def _head(engine: Engine) -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    if head is None:
        raise RuntimeError("the migrations folder has no head revision")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    # Several workers may start at once against a fresh database; only one may migrate.
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                conn.commit()
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with open(str(engine.url.database) + ".migrate.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def _stored_revision(engine: Engine) -> str | None:
    # Plain SQL, so that a database already at HEAD_REVISION costs no Alembic import
    # (a third of `melanoma submit`'s start-up otherwise).
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def ensure_schema(engine: Engine | None = None) -> None:
    """Bring the database to the latest migration (creating it if empty); cheap when already there."""
    engine = engine or get_engine()
    if _stored_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    head = _head(engine)
    if current_revision(engine) == head:
        return
    import logging

    # Alembic logs every plugin it sets up at INFO; a worker's log has better things to say.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _migration_lock(engine):
        if current_revision(engine) != head:
            cfg = _alembic_config(engine)
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")


def _transient(exc: DBAPIError) -> bool:
    # A lost connection or a locked/unreachable database may come back; a constraint violation won't.
    if isinstance(exc, IntegrityError):
        return False
    return isinstance(exc, OperationalError) or bool(getattr(exc, "connection_invalidated", False))


def retry_db(fn: Callable[[], T], deadline_s: float, what: str) -> T:
    """Call ``fn``; while the database is unreachable, retry with exponential backoff (0.5 s doubling
    to 10 s) until ``deadline_s``, logging one line per retry; then raise the last error."""
    from tenacity import Retrying, retry_if_exception, stop_before_delay, wait_exponential

    def warn(state: Any) -> None:
        exc = state.outcome.exception()
        log.warning(
            "database unavailable while %s, retrying in %.1f s: %s",
            what,
            state.next_action.sleep,
            one_line(getattr(exc, "orig", None) or exc),
        )

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, DBAPIError) and _transient(e)),
        stop=stop_before_delay(deadline_s),
        wait=wait_exponential(multiplier=0.5, min=0.5, max=10),
        before_sleep=warn,
        reraise=True,
    )
    return retrying(fn)
