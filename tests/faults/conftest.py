"""Fault-injection helpers: a few hundred real images per job, row accounting, and a summary table."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from melanoma.schema import Prediction
from tests.conftest import copy_images

N_PER_CLASS = 34  # 9 x 34 = 306 real images per job
REPORT: list[tuple[str, int, int, int, int]] = []


@pytest.fixture(scope="session")
def fault_images(tmp_path_factory, isic_dir) -> Path:
    folder = tmp_path_factory.mktemp("fault-images") / "clinic"
    copy_images(folder, N_PER_CLASS, start=40)
    return folder


def fault_settings(**extra: str) -> dict[str, str]:
    """Small batches, one image per message and one TensorFlow thread make a job last long enough
    to hit it mid-way; a short visibility timeout brings a dead worker's messages back within the test."""
    env = {"MELANOMA_BATCH_SIZE": "4", "MELANOMA_IMAGES_PER_MESSAGE": "1", "MELANOMA_TF_THREADS": "1",
           "MELANOMA_VISIBILITY_TIMEOUT": "10"}
    env.update(extra)
    return env


def counts(db_url: str, job: str) -> dict[str, int]:
    """Rows of a job, how many are still pending, and how many images have more than one row."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            rows = c.execute(select(func.count()).where(Prediction.job_id == job)).scalar()
            pending = c.execute(select(func.count()).where(Prediction.job_id == job,
                                                           Prediction.status == "pending")).scalar()
            dup = c.execute(select(func.count()).select_from(
                select(Prediction.image_path).where(Prediction.job_id == job).group_by(Prediction.image_path)
                .having(func.count() > 1).subquery())).scalar()
            done = rows - pending
    finally:
        engine.dispose()
    return {"rows": rows, "pending": pending, "duplicated": dup, "done": done}


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


def assert_exactly_once(fault: str, db_url: str, job: str, images: int) -> None:
    """Every image has exactly one row, none pending; records the outcome for the summary."""
    c = wait_until(db_url, job, images)
    lost = c["pending"] + max(images - c["rows"], 0)
    REPORT.append((fault, images, c["rows"], lost, c["duplicated"]))
    assert c["rows"] == images and c["pending"] == 0 and c["duplicated"] == 0, c


def pytest_terminal_summary(terminalreporter):
    if not REPORT:
        return
    tr = terminalreporter
    tr.section("fault injection")
    tr.write_line(f"{'fault':<44} {'images':>7} {'rows':>6} {'lost':>5} {'duplicated':>10}")
    for fault, images, rows, lost, dup in REPORT:
        tr.write_line(f"{fault:<44} {images:>7} {rows:>6} {lost:>5} {dup:>10}")
