"""The worker's batch logic (melanoma.pipeline.scoring.Scorer) without Celery, Redis or TensorFlow:
a stand-in predictor whose output is a fixed function of the pixels, real images, SQLite."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from melanoma.core.labels import PROB_COLUMNS
from melanoma.core.settings import Settings
from melanoma.pipeline.scoring import Scorer, _covered
from melanoma.store import db, jobs
from melanoma.store.schema import Prediction
from melanoma.versions.registry import ModelMeta
from tests.conftest import copy_images


class PixelPredictor:
    """Probabilities from each image's mean colour: deterministic, so that runs can be compared."""

    def __init__(self, batch_size: int = 4):
        self.batch_size = batch_size
        self.version = "pixels-1"
        self.meta = ModelMeta(version="pixels-1", architecture="test", melanoma_threshold=0.1)
        self.calls: list[int] = []
        self.test_time: str | None = None

    def refresh(self) -> bool:
        return False

    def assess(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities, and as familiarity percentile the image's mean brightness (0-100)."""
        familiarity = x.reshape(len(x), -1).mean(axis=1) / 2.55 if self.familiar else None
        return self.predict(x), familiarity

    familiar = True

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        feats = x.reshape(len(x), -1, 3).mean(axis=1) / 255.0
        logits = np.concatenate([feats, feats**2, feats**3], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def job(tmp_path):
    folder = tmp_path / "imgs"
    copy_images(folder, 5, ["melanoma", "nevus"])
    (folder / "nevus" / "broken.jpg").write_bytes(b"not a jpeg")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.ensure_schema(engine)
    with db.session_scope(engine) as s:
        job_id, ids = jobs.create_job(s, folder, jobs.discover(folder))
    return engine, folder, job_id, ids


def _probabilities(engine, ids):
    cols = [getattr(Prediction, c) for c in PROB_COLUMNS]
    with db.session_scope(engine) as s:
        rows = s.execute(
            select(Prediction.id, Prediction.status, *cols).where(Prediction.id.in_(ids)).order_by(Prediction.id)
        ).all()
    return {r[0]: (r[1], tuple(r[2:])) for r in rows}


@pytest.mark.parametrize("threads", [1, 3])
def test_a_batch_is_scored_the_same_with_any_number_of_decode_threads(job, threads):
    engine, folder, _, ids = job
    settings = Settings(allowed_roots=(folder,), decode_threads=threads)
    predictor = PixelPredictor()
    report = Scorer(engine, predictor, settings).score(ids)
    assert (report.scored, report.errors, report.skipped) == (10, 1, 0)
    assert sum(predictor.calls) == 10 and max(predictor.calls) <= predictor.batch_size
    got = _probabilities(engine, ids)
    assert sorted(status for status, _ in got.values()) == ["error"] + ["ok"] * 10
    # The same pixels decoded on one thread or three give the same rows.
    reference = Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder,), decode_threads=1))
    x = np.stack(
        [reference._decode_one(p.read_bytes()) for p in sorted(folder.rglob("*.jpg")) if p.name != "broken.jpg"]
    )
    expected = sorted(tuple(round(v, 6) for v in row) for row in PixelPredictor().predict(x))
    assert sorted(tuple(round(v, 6) for v in probs) for status, probs in got.values() if status == "ok") == expected


class SlowPixelPredictor(PixelPredictor):
    """PixelPredictor whose calls take a while and record how many ran at once."""

    def __init__(self, batch_size: int = 4):
        super().__init__(batch_size)
        self.active = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []  # each call's (start, end)

    def predict(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        with self._lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(0.05)
        try:
            return super().predict(x)
        finally:
            with self._lock:
                self.active -= 1
                self.spans.append((start, time.perf_counter()))


@pytest.mark.parametrize("calls", [1, 2, 3])
def test_model_calls_overlap_up_to_the_setting_and_rows_keep_their_own_probabilities(job, calls):
    engine, folder, _, ids = job
    predictor = SlowPixelPredictor(batch_size=2)  # ten good images: five model calls
    started = time.perf_counter()
    report = Scorer(engine, predictor, Settings(allowed_roots=(folder,), model_calls=calls)).score(ids)
    wall = time.perf_counter() - started
    assert (report.scored, report.errors) == (10, 1)
    assert predictor.most_at_once == calls and sorted(predictor.calls) == [2] * 5
    # The model was busy at least while the predictor's own calls ran, and for no more than all five
    # one after another (plus the same 0.1 s of slack as before), nor longer than the batch took
    # (overlapping calls counted once: test_overlapping_spans_are_counted_once). Measured from the
    # calls themselves, the bounds hold however loaded the machine is: a busy runner stretches every call.
    one_after_another = sum(end - start for start, end in predictor.spans)
    assert _covered(predictor.spans) - 1e-6 <= report.model_seconds <= min(wall, one_after_another + 0.1)
    # Each row got its own image's probabilities, whatever order the calls finished in.
    paths = _paths(engine, ids)
    got = _probabilities(engine, ids)
    reference = Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder,)))
    for row_id, (status, probs) in got.items():
        if status == "ok":
            expected = PixelPredictor().predict(reference._decode_one(paths[row_id].read_bytes())[None])[0]
            assert np.allclose(probs, expected, atol=1e-6)


def test_overlapping_spans_are_counted_once():
    """What a batch reports as model time: the seconds during which at least one call ran."""
    assert _covered([]) == 0.0
    assert _covered([(0.0, 1.0)]) == 1.0
    assert _covered([(2.0, 3.0), (0.0, 1.0)]) == 2.0  # apart: both, in any order
    assert _covered([(0.0, 1.0), (0.5, 1.5), (0.2, 0.8)]) == 1.5  # overlapping and nested: once
    assert _covered([(0.0, 1.0), (1.0, 2.0)]) == 2.0  # touching


class SlowReadScorer(Scorer):
    """A Scorer whose file reads take a while, recording how many were done when each model call began."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0
        self.reads_at_calls: list[int] = []

    def _read(self, path):
        time.sleep(0.02)
        self.reads += 1
        return super()._read(path)

    def _predict(self, batch, spans):
        self.reads_at_calls.append(self.reads)
        return super()._predict(batch, spans)


def test_files_are_read_a_model_batch_at_a_time_while_the_model_runs(job, tmp_path):
    engine, folder, _, ids = job
    predictor = PixelPredictor(batch_size=2)
    scorer = SlowReadScorer(engine, predictor, Settings(allowed_roots=(folder, tmp_path)))
    report = scorer.score(ids)
    assert (report.scored, report.errors) == (10, 1)
    # The first call starts once its own two files are read (and perhaps the next batch's),
    # not after all eleven: reading the rest overlaps the model.
    assert scorer.reads_at_calls[0] <= 4 and scorer.reads == 11
    # A later job mixing already-scored content with new images: the copies reuse their rows,
    # only the new images reach the model, and every row gets its own image's probabilities.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    originals = sorted(p for p in folder.rglob("*.jpg") if p.name != "broken.jpg")
    for i, p in enumerate(originals[:3]):
        (mixed / f"copy{i}.jpg").write_bytes(p.read_bytes())
    copy_images(mixed / "new", 2, ["seborrheic keratosis"])
    with db.session_scope(engine) as s:
        _, new_ids = jobs.create_job(s, mixed, jobs.discover(mixed))
    calls = len(predictor.calls)
    report = SlowReadScorer(engine, predictor, Settings(allowed_roots=(folder, tmp_path))).score(new_ids)
    assert (report.reused, report.scored, report.errors) == (3, 2, 0)
    assert sum(predictor.calls[calls:]) == 2
    reference = Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder, tmp_path)))
    paths = _paths(engine, new_ids)
    for row_id, (status, probs) in _probabilities(engine, new_ids).items():
        expected = PixelPredictor().predict(reference._decode_one(paths[row_id].read_bytes())[None])[0]
        assert status == "ok" and np.allclose(probs, expected, atol=1e-6)


def _paths(engine, ids):
    with db.session_scope(engine) as s:
        rows = s.execute(select(Prediction.id, Prediction.image_path).where(Prediction.id.in_(ids))).all()
    return {r[0]: Path(r[1]) for r in rows}


def test_scoring_twice_changes_nothing(job):
    engine, folder, _, ids = job
    scorer = Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder,)))
    scorer.score(ids)
    before = _probabilities(engine, ids)
    again = scorer.score(ids)
    assert (again.scored, again.skipped) == (0, len(ids))
    assert _probabilities(engine, ids) == before
    assert _writes(engine, ids) == [1] * len(ids)


def _writes(engine, ids) -> list[int]:
    with db.session_scope(engine) as s:
        return list(s.scalars(select(Prediction.writes).where(Prediction.id.in_(ids)).order_by(Prediction.id)))


def test_twin_deliveries_racing_write_each_row_once(job):
    """Two workers holding the same message both read the rows as pending and both score them; the
    second write must find the rows done and leave them alone (writes stays 1)."""
    engine, folder, _, ids = job
    barrier = threading.Barrier(2)

    class Racing(PixelPredictor):
        def predict(self, x: np.ndarray) -> np.ndarray:
            try:
                barrier.wait(timeout=10)  # both have read the rows as pending before either writes
            except threading.BrokenBarrierError:
                pass
            return super().predict(x)

    settings = Settings(allowed_roots=(folder,), batch_size=len(ids))
    reports = []
    threads = [
        threading.Thread(target=lambda: reports.append(Scorer(engine, Racing(len(ids)), settings).score(ids)))
        for _ in range(2)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(reports) == 2
    assert _writes(engine, ids) == [1] * len(ids)


def test_fail_gives_pending_rows_an_error_and_leaves_written_rows_alone(job):
    """The worker's give-up after its last retry (Scorer.fail): pending rows get the reason, rows a
    delivery already wrote keep their result."""
    engine, folder, _, ids = job
    scorer = Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder,)))
    done, left = ids[:3], ids[3:]
    scorer.score(done)
    before = _probabilities(engine, done)
    scorer.fail(ids, "the database was away for longer than the retries")
    assert _probabilities(engine, done) == before
    with db.session_scope(engine) as s:
        rows = s.execute(
            select(Prediction.status, Prediction.error, Prediction.scored_at).where(Prediction.id.in_(left))
        ).all()
    assert rows and all(r.status == "error" for r in rows)
    assert {r.error for r in rows} == {"the database was away for longer than the retries"}
    assert all(r.scored_at is not None for r in rows)
    assert _writes(engine, ids) == [1] * len(ids)


def test_paths_outside_the_allowed_roots_get_an_error_row(job, tmp_path):
    engine, _, _, ids = job
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = Scorer(engine, PixelPredictor(), Settings(allowed_roots=(elsewhere,))).score(ids)
    assert report.errors == len(ids) and report.scored == 0
    assert set(report.reasons.values()) == {"path is outside the allowed roots (MELANOMA_ALLOWED_ROOTS)"}


def test_identical_content_is_reused_within_a_version(job, tmp_path):
    engine, folder, _, ids = job
    predictor = PixelPredictor()
    Scorer(engine, predictor, Settings(allowed_roots=(folder, tmp_path))).score(ids)
    copy = tmp_path / "again"
    copy.mkdir()
    first = sorted(folder.rglob("*.jpg"))[0]
    (copy / "same.jpg").write_bytes(first.read_bytes())
    with db.session_scope(engine) as s:
        _, new_ids = jobs.create_job(s, copy, jobs.discover(copy))
    calls = len(predictor.calls)
    report = Scorer(engine, predictor, Settings(allowed_roots=(folder, tmp_path))).score(new_ids)
    assert report.reused == 1 and len(predictor.calls) == calls  # the model did not run


def test_jobs_are_listed_newest_first_with_progress(job, tmp_path):
    engine, folder, job_id, ids = job
    Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder,))).score(ids[:4])
    other = tmp_path / "other"
    copy_images(other, 1, ["nevus"])
    with db.session_scope(engine) as s:
        newer, _ = jobs.create_job(s, other, jobs.discover(other), name="second")
        listed = jobs.list_jobs(s, limit=5)
    assert [r["id"] for r in listed] == [newer, job_id]
    first = listed[1]
    assert (first["total"], first["done"] + first["failed"], first["pending"]) == (11, 4, 7)
    assert first["model_versions"] == ["pixels-1"] and first["created_at"].endswith("+00:00")
    assert sum(first["classes"].values()) == first["done"]


@pytest.mark.parametrize("available", [True, False])
def test_familiarity_is_stored_flagged_at_the_setting_and_reused(job, available):
    engine, folder, job_id, ids = job
    predictor = PixelPredictor()
    predictor.familiar = available
    brightness = {
        str(p): float(np.asarray(Image.open(p).convert("RGB").resize((180, 180))).mean() / 2.55)
        for p in folder.rglob("*.jpg")
        if p.name != "broken.jpg"
    }
    threshold = float(np.median(list(brightness.values())))  # half of the images above it
    settings = Settings(allowed_roots=(folder,), unfamiliar_percentile=threshold)
    report = Scorer(engine, predictor, settings).score(ids)
    with db.session_scope(engine) as s:
        rows = s.execute(
            select(Prediction.image_path, Prediction.status, Prediction.familiarity, Prediction.unfamiliar)
        ).all()
        status = jobs.job_status(s, jobs.find_job(s, job_id))
    ok = [r for r in rows if r.status == "ok"]
    if not available:
        # A version without statistics: no score and no flag, and the job says nothing about it.
        assert all(r.familiarity is None and r.unfamiliar is None for r in rows)
        assert (status.measured, status.unfamiliar, status.median_familiarity) == (0, 0, None)
        return
    for r in ok:
        assert r.familiarity == pytest.approx(brightness[r.image_path], abs=1.0)
        assert r.unfamiliar is (r.familiarity > threshold)
    assert [r.familiarity for r in rows if r.status == "error"] == [None]
    flagged = sum(r.unfamiliar for r in ok)
    assert 0 < flagged < len(ok), "the threshold should split these images"
    assert report.unfamiliar == status.unfamiliar == flagged and status.measured == len(ok)
    values = sorted(r.familiarity for r in ok)
    assert status.median_familiarity == values[(len(values) - 1) // 2]
    # The same content in a second job is reused with its familiarity, not left without one.
    with db.session_scope(engine) as s:
        _, again = jobs.create_job(s, folder, jobs.discover(folder), name="again")
    second = Scorer(engine, PixelPredictor(), settings).score(again)
    assert second.reused == len(ok)
    with db.session_scope(engine) as s:
        reused = dict(
            s.execute(select(Prediction.image_path, Prediction.familiarity).where(Prediction.id.in_(again))).all()
        )
    assert {r.image_path: r.familiarity for r in ok} == {p: f for p, f in reused.items() if f is not None}


def test_a_local_operating_point_sets_the_flag_of_its_sites_and_folders_images(job, tmp_path):
    """A site's threshold flags that site's jobs, a folder's the images under it, the version's own
    the rest; each row says which threshold flagged it, and the site's wins over the folder's."""
    from melanoma.store import thresholds

    engine, folder, job_id, ids = job
    settings = Settings(allowed_roots=(folder,))
    with db.session_scope(engine) as s:
        site_job, site_ids = jobs.create_job(s, folder, jobs.discover(folder), site="clinic-a")
        thresholds.set_point(s, "site clinic-a", "pixels-1", 1.0, 0.9, 40, 12, "dr test")
        thresholds.set_point(s, f"root {folder / 'nevus'}", "pixels-1", 0.0, 0.9, 40, 12, "dr test")
        thresholds.set_point(s, "site clinic-a", "another-version", 0.0, 0.9, 40, 12, "dr test")
    Scorer(engine, PixelPredictor(), settings).score([*ids, *site_ids])
    with db.session_scope(engine) as s:
        rows = s.execute(
            select(Prediction.job_id, Prediction.image_path, Prediction.melanoma_flag, Prediction.p_melanoma)
            .add_columns(Prediction.flag_threshold, Prediction.flag_scope)
            .where(Prediction.status == "ok")
        ).all()
    assert len(rows) == 20
    for job_ref, path, flag, p, at, scope in rows:
        if job_ref == site_job:
            assert (at, scope, flag) == (1.0, "site clinic-a", p >= 1.0)
        elif "/nevus/" in path:
            assert (at, scope, flag) == (0.0, f"root {folder / 'nevus'}", True)
        else:
            assert (at, scope, flag) == (0.1, "version", p >= 0.1)
    with db.session_scope(engine) as s:
        status = jobs.job_status(s, s.get(jobs.Job, site_job))
    assert status.site == "clinic-a" and status.flags == (("site clinic-a", 1.0, 10, 0),)


def test_a_row_gets_the_class_of_the_versions_decision_weights(job):
    """A version with decision weights: each row's class is the highest weighted probability, its
    confidence that class's probability; the probabilities themselves are stored unweighted."""
    from melanoma.core.decision import predicted_classes
    from melanoma.core.labels import CLASS_NAMES

    engine, folder, _, ids = job
    predictor = PixelPredictor()
    weights = [1.0] * 9
    weights[CLASS_NAMES.index("vascular lesion")] = 50.0  # far from the most probable class of any image
    predictor.meta.decision_weights = weights
    Scorer(engine, predictor, Settings(allowed_roots=(folder,))).score(ids)
    cols = [getattr(Prediction, c) for c in PROB_COLUMNS]
    with db.session_scope(engine) as s:
        rows = s.execute(
            select(Prediction.predicted_class, Prediction.confidence, *cols).where(Prediction.status == "ok")
        ).all()
    assert len(rows) == 10
    for cls, confidence, *probs in rows:
        p = np.asarray(probs)
        assert cls == "vascular lesion" != CLASS_NAMES[int(p.argmax())]
        assert cls == CLASS_NAMES[int(predicted_classes(p, weights))] and confidence == pytest.approx(p[-1])
