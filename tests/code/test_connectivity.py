"""Connection failures become one line that names the server, without its password."""

import kombu.exceptions
import pytest
import redis.exceptions
import sqlalchemy
import sqlalchemy.exc

from melanoma.core.connectivity import describe_connection_error
from melanoma.core.settings import get_settings


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("MELANOMA_BROKER_URL", "redis://:hunter2@broker.example:6379/0")
    monkeypatch.setenv("MELANOMA_DATABASE_URL", "postgresql+psycopg://melanoma:hunter2@db.example/melanoma")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_broker_failures_name_the_broker(settings):
    for exc in (
        kombu.exceptions.OperationalError("Error 111 connecting to broker.example:6379.\nConnection refused."),
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.AuthenticationError("invalid password"),
        redis.exceptions.TimeoutError("Timeout connecting to server"),
        ConnectionRefusedError(111, "Connection refused"),
    ):
        msg = describe_connection_error(exc)
        assert msg is not None and msg.startswith("cannot reach the broker redis://:**@broker.example:6379/0: ")
        assert "hunter2" not in msg and "\n" not in msg


def test_broker_urls_lose_only_their_password():
    from melanoma.core.settings import Settings

    def redact(url: str) -> str:
        return Settings.from_env({"MELANOMA_BROKER_URL": url}).redacted_broker_url()

    assert redact("redis://user:s3cret@h:6379/1") == "redis://user:**@h:6379/1"
    assert redact("rediss://:p%40ss@h/0") == "rediss://:**@h/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_database_failures_name_the_database_without_its_password(settings, tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        engine.connect()
    msg = describe_connection_error(caught.value)
    assert (
        msg
        == "cannot use the database postgresql+psycopg://melanoma:***@db.example/melanoma: unable to open database file"
    )


def test_other_errors_are_not_connection_errors(settings):
    assert describe_connection_error(ValueError("bad")) is None
    assert describe_connection_error(KeyError("x")) is None
