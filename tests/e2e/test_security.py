"""No way in: pickle messages are refused, hostile job names are stored and shown as data."""

import ast
import json
import os
import time
from pathlib import Path

import pytest
import redis

from melanoma.core.settings import Settings
from melanoma.pipeline.broker import SCORE_TASK, make_celery
from tests.conftest import REPO, copy_images, run_cli, service_env, submit, wait_complete

pytestmark = pytest.mark.e2e


class Exploit:
    """Unpickling this runs a shell command: what an attacker with access to Redis would send."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_message_is_refused_and_nothing_runs(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    marker = tmp_path / "pwned"
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [tmp_path])
    w = start_worker(env)
    app = make_celery(Settings.from_env(env))
    app.conf.task_serializer = "pickle"  # only this sender; the worker accepts JSON alone
    app.send_task(SCORE_TASK, args=[Exploit(marker)], serializer="pickle")
    queue = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while "untrusted content" not in w.log().lower() and "contentdisallowed" not in w.log().lower():
        assert time.monotonic() < deadline, w.log()[-2000:]
        time.sleep(0.2)
    assert queue.llen(env["MELANOMA_QUEUE"]) == 0  # consumed and dropped, not left to retry
    assert not marker.exists()
    # the worker is unharmed and goes on scoring
    copy_images(tmp_path / "imgs", 1, ["nevus", "melanoma"])
    job = submit(env, tmp_path / "imgs", "--wait", "--timeout", "120")
    assert wait_complete(env, job)["done"] == 2
    assert not marker.exists() and w.proc.poll() is None


def test_hostile_job_name_is_stored_and_shown_as_data(tmp_path, redis_url, sqlite_url, shipped_model_dir):
    name = "x'); DROP TABLE jobs; -- \x1b[31mred\x1b[0m"
    copy_images(tmp_path / "imgs", 1, ["nevus"])
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [tmp_path])
    job = submit(env, tmp_path / "imgs", "--name", name)
    r = run_cli(["status", job, "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == name  # stored exactly
    r = run_cli(["status", job], env)
    assert r.returncode == 0 and "DROP TABLE jobs" in r.stdout
    assert "\x1b" not in r.stdout  # no terminal escape sequences reach the screen
    from sqlalchemy import create_engine, inspect

    assert "jobs" in inspect(create_engine(sqlite_url)).get_table_names()


PRODUCT = ["melanoma", "producer", "worker", "trainer"]


def dynamic_sql(source: str) -> list[int]:
    """Lines where text()/execute() gets an f-string, a % or + expression, or a .format() call."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("text", "execute", "exec_driver_sql")
            and node.args
        ):
            arg = node.args[0]
            built = isinstance(arg, ast.BinOp) and isinstance(arg.op, (ast.Mod, ast.Add))
            if (
                isinstance(arg, ast.JoinedStr)
                or built
                or (isinstance(arg, ast.Call) and getattr(arg.func, "attr", "") == "format")
            ):
                lines.append(node.lineno)
    return lines


def test_no_sql_is_built_from_strings():
    """Every query goes through SQLAlchemy constructs or bound parameters."""
    # the check itself catches what it should
    assert dynamic_sql("conn.execute(text(f'SELECT * FROM jobs WHERE id = {x}'))") == [1]
    assert dynamic_sql("conn.execute('DELETE FROM jobs WHERE id = %s' % x)") == [1]
    assert dynamic_sql("c.exec_driver_sql('SELECT {}'.format(x))") == [1]
    assert dynamic_sql("conn.execute(text('SELECT :k'), {'k': x})") == []
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for pkg in PRODUCT
        for path in (REPO / pkg).rglob("*.py")
        for line in dynamic_sql(path.read_text())
    ]
    assert not offenders, offenders
