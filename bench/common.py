"""What the benchmarks share: real images, local servers, worker processes, RSS sampling."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "scripts" / "lib.sh"
DEFAULT_DATA = REPO.parent / "shared" / "data"


def real_images(data_dir: Path) -> list[Path]:
    """Every ISIC / HAM10000 JPEG under ``data_dir``."""
    files = sorted(p for p in data_dir.rglob("*.jpg") if "(" not in p.name)
    if not files:
        sys.exit(f"no images under {data_dir}: pass --data (the folder holding isic-9class/ and ham10000/)")
    return files


def make_folder(dest: Path, sources: list[Path], n: int, unique: bool = True, salt: bytes = b"") -> list[Path]:
    """``n`` image files under ``dest``, cycling through ``sources`` under new names.

    With ``unique``, each copy gets a few bytes after the JPEG end marker: decoders ignore them,
    but the content hash differs, so the worker really scores every copy instead of reusing.
    Folders made from the same sources need different ``salt`` to differ from each other.
    """
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        target = dest / f"{i // 1000:03d}" / f"img{i:06d}.jpg"
        target.parent.mkdir(exist_ok=True)
        data = src.read_bytes()
        target.write_bytes(data + (b"\x00" + i.to_bytes(8, "little") + salt if unique else b""))
        out.append(target)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A throwaway redis-server on loopback (scripts/lib.sh's start_redis)."""

    def __init__(self, workdir: Path):
        self.dir = workdir / f"redis-{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        subprocess.run(["bash", "-c", f'source "{LIB}"; start_redis "{self.dir}" {self.port}'], check=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        subprocess.run(["bash", "-c", f'source "{LIB}"; stop_redis "{self.dir}"'], check=False)


def env_for(database_url: str, broker_url: str, roots: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANOMA_")}
    env.update(
        {
            "MELANOMA_DATABASE_URL": database_url,
            "MELANOMA_BROKER_URL": broker_url,
            "MELANOMA_ALLOWED_ROOTS": os.pathsep.join(map(str, roots)),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
            "MELANOMA_QUEUE": "bench-" + uuid.uuid4().hex[:6],
        }
    )
    env.update(extra)
    return env


class Worker:
    """A worker process group: ``melanoma worker``, or ``celery -A APP worker`` for another app."""

    def __init__(self, env: dict[str, str], log: Path, name: str, concurrency: int = 1, app: str | None = None):
        self.log_path = log
        self._log = open(log, "w")
        if app is None:
            argv = [sys.executable, "-m", "melanoma", "worker", "-c", str(concurrency)]
        else:
            argv = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "-c",
                str(concurrency),
                "--pool",
                "prefork",
                "-l",
                "INFO",
                "-Q",
                env["MELANOMA_QUEUE"],
            ]
        self.proc = subprocess.Popen(
            argv + ["--hostname", f"{name}@%h"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def wait_ready(self, processes: int = 1, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(errors="replace").count("worker process ready") < processes:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """The main process and its pool children."""
        import psutil

        try:
            main = psutil.Process(self.proc.pid)
            return [main.pid, *(c.pid for c in main.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MB (0 once it has gone)."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / (1024 * 1024)
    except psutil.NoSuchProcess:
        return 0.0


class RssSampler(threading.Thread):
    """Samples the RSS of every process of the given workers every ``interval`` seconds."""

    def __init__(self, workers: dict[str, Worker], interval: float = 2.0):
        super().__init__(daemon=True)
        self.workers, self.interval = workers, interval
        self.samples: list[tuple[float, str, float]] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self._halt.is_set():
            now = time.monotonic() - self.t0
            for name, w in self.workers.items():
                self.samples.append((now, name, sum(rss_mb(p) for p in w.pids())))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def submit_and_wait(env: dict[str, str], folder: Path, engine, poll: float = 0.5, *extra: str) -> tuple[str, float]:
    """Submit ``folder`` with the real CLI and wait until no image of the job is pending.

    Returns the job id and the seconds from starting ``submit`` to the last row. The workers'
    progress announcements (melanoma.pipeline.progress, subscribed before ``submit`` starts) say when a
    batch is written, so the end is seen within milliseconds without polling the database while
    the workers need the CPU; ``poll`` seconds is the longest wait between two looks.
    """
    from sqlalchemy import func, select

    from melanoma.pipeline.broker import broker_client
    from melanoma.pipeline.progress import Listener
    from melanoma.store.schema import Prediction

    listener = Listener(broker_client(env["MELANOMA_BROKER_URL"]), env["MELANOMA_QUEUE"])
    try:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "melanoma", "submit", str(folder), *extra],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        job = out.stdout.split()[-1]
        while True:
            with engine.connect() as c:
                left = c.execute(
                    select(func.count()).where(Prediction.job_id == job, Prediction.status == "pending")
                ).scalar()
            if left == 0:
                return job, time.perf_counter() - t0
            listener.wait(job, poll)
    finally:
        listener.close()


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
