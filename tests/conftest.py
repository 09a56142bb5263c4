"""Shared fixtures: real redis-server and PostgreSQL processes, real ISIC images, real workers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from melanoma.core.labels import PROB_COLUMNS

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "scripts" / "lib.sh"
DATA = Path(os.environ.get("MELANOMA_TEST_DATA", REPO.parent / "shared" / "data"))
ISIC = DATA / "isic-9class" / "Train"
# Real images shipped with the repository (tests/images/LICENSE.md): every test that needs a few
# real images uses these, so the suite runs from a fresh clone.
TEST_IMAGES = REPO / "tests" / "images"
REQUIRE = os.environ.get("MELANOMA_REQUIRE_SERVERS") == "1"
MELANOMA = [sys.executable, "-m", "melanoma"]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``long`` (minutes of waiting on a fault) run only with MELANOMA_LONG_TESTS=1."""
    if os.environ.get("MELANOMA_LONG_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long test: set MELANOMA_LONG_TESTS=1 to run it")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def _missing(what: str):
    if REQUIRE:
        pytest.fail(f"{what} is required (MELANOMA_REQUIRE_SERVERS=1) but not available")
    pytest.skip(f"{what} not available")


def _lib(call: str) -> None:
    subprocess.run(["bash", "-c", f'source "{LIB}"; {call}'], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on loopback for the whole session."""
    if shutil.which("redis-server") is None:
        _missing("redis-server")
    d = tmp_path_factory.mktemp("redis")
    port = free_port()
    _lib(f'start_redis "{d}" {port}')
    yield f"redis://127.0.0.1:{port}/0"
    _lib(f'stop_redis "{d}"')


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL cluster on loopback for the whole session."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        _missing("PostgreSQL")
    d = Path(f"/tmp/melanoma-pg-{uuid.uuid4().hex[:8]}")
    port = free_port()
    _lib(f'start_postgres "{d}" {port}')
    yield f"postgresql+psycopg://melanoma@127.0.0.1:{port}/melanoma"
    _lib(f'stop_postgres "{d}"')
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_url):
    """A fresh, empty PostgreSQL database per test."""
    from sqlalchemy import create_engine, text

    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    yield url
    from melanoma.store import db

    db._engine_for.cache_clear()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'melanoma.db'}"


@pytest.fixture(scope="session")
def isic_dir():
    """The whole ISIC nine-class set (``MELANOMA_TEST_DATA``): for the tests about the data itself,
    training and the shipped model's figures. Skipped, saying why, where it is absent."""
    if not ISIC.is_dir():
        pytest.skip(f"needs the full ISIC nine-class set at {ISIC} (set MELANOMA_TEST_DATA; CI has it)")
    return ISIC


def copy_images(dest: Path, n_per_class: int, classes: list[str] | None = None, start: int = 0) -> list[Path]:
    """Copy real images from ``tests/images`` into ``dest/<class>/`` and return their paths.

    Image ``start + i`` of a class cycles through the shipped ones; a second and later use of a file
    gets a new name and a few bytes after the JPEG end marker, so that its content (and image id)
    are new and a worker scores it instead of reusing an earlier prediction.
    """
    out = []
    for cls_dir in sorted(p for p in TEST_IMAGES.iterdir() if p.is_dir() and p.name != "fullres"):
        if classes and cls_dir.name not in classes:
            continue
        files = sorted(cls_dir.glob("*.jpg"))
        (dest / cls_dir.name).mkdir(parents=True, exist_ok=True)
        for k in range(start, start + n_per_class):
            src, turn = files[k % len(files)], k // len(files)
            if turn == 0:
                target = dest / cls_dir.name / src.name
                shutil.copyfile(src, target)
            else:
                # The class in the name keeps image ids (file stems) distinct across classes.
                target = dest / cls_dir.name / f"{cls_dir.name.replace(' ', '_')}-copy{turn}-{k:04d}.jpg"
                target.write_bytes(src.read_bytes() + b"\x00" + k.to_bytes(4, "little"))
            out.append(target)
    return out


@pytest.fixture(scope="session")
def shipped_model_dir():
    """The model registry shipped in the repo."""
    from melanoma.versions.registry import Registry

    d = REPO / "models"
    if Registry(d).current() is None:
        pytest.fail("models/ has no current model version")
    return d


def service_env(
    tmp_path: Path, database_url: str, redis_url: str, model_dir: Path, roots: list[Path], **extra: str
) -> dict[str, str]:
    """Environment for a worker or producer process with its own queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANOMA_")}
    env.update(
        {
            "MELANOMA_BROKER_URL": redis_url,
            "MELANOMA_DATABASE_URL": database_url,
            "MELANOMA_MODEL_DIR": str(model_dir),
            "MELANOMA_ALLOWED_ROOTS": os.pathsep.join(str(r) for r in roots),
            "MELANOMA_QUEUE": "q-" + uuid.uuid4().hex[:8],
            "MELANOMA_BATCH_WAIT": "0.1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120, cwd: Path | None = None):
    """Run the ``melanoma`` command; returns the CompletedProcess."""
    return subprocess.run(MELANOMA + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO)


class Worker:
    """A real ``melanoma worker`` process."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "w1", obey_file_modes: bool = False):
        self.log_path = log_path
        self._log = open(log_path, "w")
        prefix = []
        if obey_file_modes and os.getuid() == 0:
            # root reads any file; without these two capabilities it obeys file modes like anyone
            caps = "-dac_override,-dac_read_search"
            prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
        self.node = f"{name}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.proc = subprocess.Popen(
            prefix + MELANOMA + ["worker", "--loglevel", "INFO", "--hostname", self.node],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "worker process ready" in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError("worker exited early:\n" + self.log()[-3000:])
            time.sleep(0.3)
        raise AssertionError("worker not ready in time:\n" + self.log()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_worker(tmp_path):
    """Factory: start a worker with an environment; all are stopped at teardown."""
    started: list[Worker] = []

    def start(env: dict[str, str], name: str = "w1", obey_file_modes: bool = False) -> Worker:
        w = Worker(env, tmp_path / f"worker-{name}-{len(started)}.log", name, obey_file_modes)
        started.append(w)
        w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop()


def queued_image_ids(redis_url: str, queue: str) -> list[int]:
    """The row ids carried by the messages waiting in ``queue``."""
    import base64
    import json

    import redis

    from melanoma.pipeline.broker import message_ids

    out = []
    for raw in redis.Redis.from_url(redis_url).lrange(queue, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        out.extend(message_ids(body[0]))
    return out


def wait_complete(env: dict[str, str], job: str, timeout: float = 300) -> dict:
    """Poll ``melanoma status --format json`` until the job has no pending image."""
    import json

    deadline = time.monotonic() + timeout
    while True:
        r = run_cli(["status", job, "--format", "json"], env)
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        if st["complete"]:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"job not complete after {timeout} s: {st}")
        time.sleep(0.5)


# Results CSV columns, as `melanoma results --format csv` writes them.
HEADER = [
    "image_path",
    "status",
    "error",
    "predicted_class",
    "confidence",
    *PROB_COLUMNS,
    "model_version",
    "melanoma_flag",
    "flag_threshold",
    "flag_scope",
    "familiarity",
    "unfamiliar",
    "test_time",
]


def submit(env: dict[str, str], folder: Path, *extra: str) -> str:
    """`melanoma submit FOLDER`; returns the job id."""
    r = run_cli(["submit", str(folder), *extra], env, timeout=600)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}", job), r.stdout
    return job


def results_csv(env: dict[str, str], job: str) -> list[dict[str, str]]:
    """`melanoma results JOB --format csv` as one dict per row."""
    import csv
    import io

    r = run_cli(["results", job, "--format", "csv"], env)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == HEADER
    return [dict(zip(HEADER, row)) for row in rows[1:]]
