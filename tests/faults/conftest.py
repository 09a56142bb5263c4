"""Fault-injection helpers: a few hundred real images per job, row accounting, and a summary table."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from melanoma.store.schema import Prediction
from tests.conftest import copy_images

N_PER_CLASS = 34  # 9 x 34 = 306 real images per job
REPORT: list[tuple[str, int, int, int, int, float | None]] = []


@pytest.fixture(scope="session")
def fault_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-images") / "clinic"
    copy_images(folder, N_PER_CLASS, start=40)
    return folder


def fault_settings(**extra: str) -> dict[str, str]:
    """Small batches, one image per message and one TensorFlow thread make a job last long enough
    to hit it mid-way. Recovery runs with the default settings (visibility timeout one hour,
    heartbeat 10 s): nothing here waits for the visibility timeout."""
    env = {"MELANOMA_BATCH_SIZE": "4", "MELANOMA_IMAGES_PER_MESSAGE": "1", "MELANOMA_TF_THREADS": "1"}
    env.update(extra)
    return env


def counts(db_url: str, job: str) -> dict[str, int]:
    """Rows of a job, how many are still pending, how many images have more than one row, and what
    the workers did: the writes of all rows together and the rows written more than once."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(select(func.count()).where(Prediction.job_id == job)).scalar()
            pending = c.execute(
                select(func.count()).where(Prediction.job_id == job, Prediction.status == "pending")
            ).scalar()
            dup = c.execute(
                select(func.count()).select_from(
                    select(Prediction.image_path)
                    .where(Prediction.job_id == job)
                    .group_by(Prediction.image_path)
                    .having(func.count() > 1)
                    .subquery()
                )
            ).scalar()
            done = rows - pending
            writes = c.execute(select(func.coalesce(func.sum(Prediction.writes), 0)).where(Prediction.job_id == job))
            rewritten = c.execute(select(func.count()).where(Prediction.job_id == job, Prediction.writes > 1))
            writes, rewritten = writes.scalar(), rewritten.scalar()
    finally:
        engine.dispose()
    return {"rows": rows, "pending": pending, "duplicated": dup, "done": done, "writes": writes, "rewritten": rewritten}


def wait_until(db_url: str, job: str, done_at_least: int, timeout: float = 240) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = counts(db_url, job)
            if c["done"] >= done_at_least:
                return c
        except Exception:  # the database may be the fault being injected
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job}: fewer than {done_at_least} rows done after {timeout} s")
        time.sleep(0.2)


def assert_exactly_once(
    fault: str, db_url: str, job: str, images: int, since: float | None = None, within: float = 240
) -> float | None:
    """Every image has exactly one row, none pending, and was written by a worker exactly once (a
    re-delivered message that was scored and written again fails this), within ``within`` seconds;
    records the outcome
    for the summary. ``since`` (time.monotonic()) is when the fault ended: the time from then until
    the last row was done is reported as the time to recover, and returned."""
    c = wait_until(db_url, job, images, timeout=within)
    recovered = time.monotonic() - since if since is not None else None
    lost = c["pending"] + max(images - c["rows"], 0)
    REPORT.append((fault, images, c["rows"], lost, c["rewritten"], recovered))
    assert c["rows"] == images and c["pending"] == 0 and c["duplicated"] == 0, c
    assert c["writes"] == images and c["rewritten"] == 0, c
    return recovered


def pytest_terminal_summary(terminalreporter):
    if not REPORT:
        return
    tr = terminalreporter
    tr.section("fault injection")
    tr.write_line(
        f"{'fault':<48} {'images':>7} {'rows':>6} {'lost':>5} {'written twice':>13} {'recovered after (s)':>20}"
    )
    for fault, images, rows, lost, dup, recovered in REPORT:
        shown = "-" if recovered is None else f"{recovered:.1f}"
        tr.write_line(f"{fault:<48} {images:>7} {rows:>6} {lost:>5} {dup:>13} {shown:>20}")


# The version the fault tests' workers score with: faults are about the pipeline, not the model, and the
# shipped current (EfficientNet-Lite0 at 224 px) scores ~5x slower on a CPU than the robust CNN, which
# would add minutes to CI's fault suite. The shipped current runs end to end in tests/e2e.
FAULT_VERSION = "robust-20261128T022748-014a"


@pytest.fixture(scope="session")
def fault_model_dir(shipped_model_dir, tmp_path_factory):
    """A registry holding the shipped robust version alone, as current."""
    from melanoma.versions.registry import Registry

    root = tmp_path_factory.mktemp("fault-models")
    shutil.copytree(shipped_model_dir / FAULT_VERSION, root / FAULT_VERSION)
    Registry(root).set_current(FAULT_VERSION, reason="fault tests")
    return root
