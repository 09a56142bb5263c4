"""Confirmed diagnoses without a worker: recording and correcting them (append-only, audited), the
`review import` / `export` commands on a real database, the figures of `evaluate --reviews` against
a case worked by hand, and `threshold set`. Rows stand in for what a worker wrote."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.store import db, jobs, reviews, thresholds
from melanoma.store.schema import AuditEvent, ModelVersion, OperatingPoint, Prediction, Review
from melanoma.versions.registry import Registry
from tests.conftest import REPO, run_cli

SHIPPED = REPO / "models"


def probs_with(melanoma: float, top: str | None = None, p_top: float = 0.0) -> list[float]:
    """Nine probabilities: ``melanoma`` for melanoma, ``p_top`` for ``top``, the rest shared evenly."""
    p = {"melanoma": melanoma}
    if top and top != "melanoma":
        p[top] = p_top
    rest = (1.0 - sum(p.values())) / (len(CLASS_NAMES) - len(p))
    return [p.get(c, rest) for c in CLASS_NAMES]


def scored_job(
    engine, root: str, cases: list[tuple[str, list[float]]], version: str, site: str | None = "clinic-a"
) -> tuple[str, list[int]]:
    """A job of ``site`` whose images (``root/<name>.jpg``, content hash from the name) were scored
    by ``version`` with these probabilities."""
    paths = [f"{root}/{name}.jpg" for name, _ in cases]
    with db.session_scope(engine) as s:
        if s.get(ModelVersion, version) is None:
            s.add(ModelVersion(version=version, architecture="test", classes=list(CLASS_NAMES), input_size=[224, 224]))
        job_id, ids = jobs.create_job(s, Path(root), paths, site=site)
        for i, (name, probs) in zip(ids, cases):
            top = int(np.argmax(probs))
            s.execute(
                update(Prediction)
                .where(Prediction.id == i)
                .values(
                    status="ok",
                    sha256=f"{name:0>64}"[-64:],
                    predicted_class=CLASS_NAMES[top],
                    confidence=probs[top],
                    model_version=version,
                    **dict(zip(PROB_COLUMNS, probs)),
                )
            )
    return job_id, ids


def sha(name: str) -> str:
    return f"{name:0>64}"[-64:]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        from sqlalchemy import create_engine, text

        server = request.getfixturevalue("postgres_url")
        name = "reviews_" + uuid.uuid4().hex[:10]
        with create_engine(server, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.rsplit("/", 1)[0] + "/" + name
    e = db.make_engine(url)
    db.ensure_schema(e)
    e.test_url = url  # type: ignore[attr-defined]
    return e


def test_a_correction_supersedes_and_both_entries_stay_with_their_audit_events(engine):
    job_id, ids = scored_job(engine, "/clinic/a", [("a1", probs_with(0.7, "melanoma"))], "v1")
    with db.session_scope(engine) as s:
        row = s.get(Prediction, ids[0])
        first = reviews.record(s, row, "nevus", "expert consensus", None, "Dr A", "viewer", "127.0.0.1")
        assert reviews.record(s, row, "nevus", "expert consensus", "", "Dr A", "viewer") is None  # a repeat
        second = reviews.record(s, row, "melanoma", "histopathology", "Breslow 0.4 mm", "Dr B", "viewer")
    assert first is not None and second is not None and second.supersedes == first.id
    with db.session_scope(engine) as s:
        assert [r.diagnosis for r in reviews.history(s, sha("a1"))] == ["nevus", "melanoma"]
        assert reviews.current(s, sha("a1")).diagnosis == "melanoma"  # type: ignore[union-attr]
        events = [(e.actor, e.action, e.remote) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert events == [("Dr A", "review.record", "127.0.0.1"), ("Dr B", "review.correct", None)]
    exported = list(_export(engine, everything=True))
    assert [(r["diagnosis"], r["current"], r["site"]) for r in exported] == [
        ("nevus", 0, "clinic-a"),
        ("melanoma", 1, "clinic-a"),
    ]
    assert [r["diagnosis"] for r in _export(engine)] == ["melanoma"]


def _export(engine, everything: bool = False):
    with db.session_scope(engine) as s:
        yield from reviews.export_rows(s, include_superseded=everything)


PATHOLOGY_CSV = """\
image_path,diagnosis,basis,note
/clinic/a/a1.jpg,melanoma,histopathology,Breslow 0.4 mm
/clinic/a/a2.jpg,Nevus,Histopathology,
/clinic/a/nowhere.jpg,melanoma,histopathology,
/clinic/a/a3.jpg,angioma,histopathology,
/clinic/a/a4.jpg,basal_cell_carcinoma,biopsy,
/clinic/a/a1.jpg,melanoma,histopathology,again
/clinic/a/a5.jpg,other,follow-up,lentigo
"""


def test_import_keeps_the_good_rows_reports_the_bad_ones_and_twice_adds_nothing(engine, tmp_path):
    """The CLI on a real database: each refused row is named by its line and reason, the valid rows
    are recorded, and importing the same file again records nothing more."""
    scored_job(engine, "/clinic/a", [(f"a{i}", probs_with(0.2, "nevus", 0.5)) for i in range(1, 6)], "v1")
    export = tmp_path / "pathology.csv"
    export.write_text(PATHOLOGY_CSV)
    env = {"MELANOMA_DATABASE_URL": engine.test_url, "PATH": "/usr/bin:/bin"}
    r = run_cli(["review", "import", str(export), "--reviewer", "Pathology lab"], env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    problems = [line for line in r.stderr.splitlines() if line.startswith("pathology.csv: line")]
    assert problems == [
        "pathology.csv: line 4: no scored image with path /clinic/a/nowhere.jpg",
        "pathology.csv: line 5: unknown diagnosis 'angioma': one of the nine classes or 'other'",
        "pathology.csv: line 6: unknown basis 'biopsy': one of histopathology, expert consensus, follow-up",
        "pathology.csv: line 7: the same image as line 2; skipped",
    ]
    assert "3 diagnoses recorded, 0 already recorded, 4 rows refused" in r.stderr
    kept = {(r["image_path"], r["diagnosis"], r["basis"], r["note"], r["reviewer"]) for r in _export(engine)}
    assert kept == {
        ("/clinic/a/a1.jpg", "melanoma", "histopathology", "Breslow 0.4 mm", "Pathology lab"),
        ("/clinic/a/a2.jpg", "nevus", "histopathology", "", "Pathology lab"),
        ("/clinic/a/a5.jpg", "other", "follow-up", "lentigo", "Pathology lab"),
    }
    again = run_cli(["review", "import", str(export), "--reviewer", "Pathology lab"], env)
    assert "0 diagnoses recorded, 3 already recorded, 4 rows refused" in again.stderr
    with db.session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 3
    out = run_cli(["review", "export"], env)
    assert out.returncode == 0
    assert [row["diagnosis"] for row in csv.DictReader(io.StringIO(out.stdout))] == ["melanoma", "nevus", "other"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.jpg,melanoma\n")
    r = run_cli(["review", "import", str(bad)], env)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "needs a header with image_path" in r.stderr


def test_an_import_that_fails_part_way_writes_nothing(engine, monkeypatch):
    scored_job(engine, "/clinic/a", [(f"a{i}", probs_with(0.2, "nevus", 0.5)) for i in range(1, 4)], "v1")
    text = "sha256,diagnosis,basis\n" + "".join(f"{sha(f'a{i}')},nevus,follow-up\n" for i in range(1, 4))
    real, calls = reviews.record, []

    def record_then_fail(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionError("the database went away")
        return real(*args, **kw)

    monkeypatch.setattr(reviews, "record", record_then_fail)
    with pytest.raises(ConnectionError):
        with db.session_scope(engine) as s:
            reviews.import_csv(s, text, "lab")
    with db.session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 0
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 0


# A case worked by hand: (name, diagnosis, P(melanoma), top class if not melanoma, its probability).
HAND = [
    ("h1", "melanoma", 0.9, None, 0.0),
    ("h2", "melanoma", 0.6, "nevus", 0.3),
    ("h3", "melanoma", 0.2, "nevus", 0.7),
    ("h4", "nevus", 0.7, "nevus", 0.2),
    ("h5", "nevus", 0.3, "nevus", 0.6),
    ("h6", "basal cell carcinoma", 0.1, "basal cell carcinoma", 0.8),
    ("h7", "other", 0.4, "nevus", 0.5),
]


def hand_case(tmp_path: Path) -> tuple[str, object, str, str, list[int]]:
    """A database where site clinic-a's HAND images were scored by the shipped current version and
    confirmed: (url, engine, version, job id, row ids)."""
    version = Registry(SHIPPED).current()
    assert version
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    job_id, ids = scored_job(engine, "/clinic/a", [(n, probs_with(p, t, pt)) for n, _, p, t, pt in HAND], version)
    with db.session_scope(engine) as s:
        for i, (_, diagnosis, *_rest) in zip(ids, HAND):
            reviews.record(s, s.get(Prediction, i), diagnosis, "histopathology", None, "Dr A", "import")
    return url, engine, version, job_id, ids


def test_evaluate_reviews_gives_the_hand_computed_figures(tmp_path):
    """At a local threshold of 0.5: flagged h1, h2, h4. Sensitivity 2/3 (Wilson 95 % 0.208-0.939),
    specificity 3/4 (h5, h6, h7 unflagged; 0.301-0.954). AUC: of the 3 x 4 melanoma/other pairs the
    melanoma ranks higher in 4 + 3 + 1 = 8, so 8/12. Balanced accuracy over the nine-class cases
    h1-h6: melanoma recall 2/3 (h3 is called nevus), nevus 1/2 (h4 is called melanoma), basal cell
    carcinoma 1/1, so (2/3 + 1/2 + 1)/3 = 0.7222. `other` counts as not melanoma and is left out of
    the balanced accuracy."""
    url, engine, version, job_id, _ = hand_case(tmp_path)
    _, other = scored_job(engine, "/clinic/b", [("b1", probs_with(0.9, "melanoma"))], version, site="clinic-b")
    with db.session_scope(engine) as s:  # another site's case stays out of clinic-a's figures
        reviews.record(s, s.get(Prediction, other[0]), "nevus", "histopathology", None, "Dr B", "import")
        thresholds.set_point(s, "site clinic-a", version, 0.5, 0.66, 7, 3, "Dr A")
    env = {"MELANOMA_DATABASE_URL": url, "MELANOMA_MODEL_DIR": str(SHIPPED), "PATH": "/usr/bin:/bin"}
    r = run_cli(["evaluate", "--reviews", "--site", "clinic-a", "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    f = got["figures"]
    assert (got["version"], got["rescored"], got["skipped"]) == (version, 0, [])
    assert got["thresholds"] == {"site clinic-a P>=0.5000": 7}
    assert (f["cases"], f["melanomas"], f["other"]) == (7, 3, 1)
    sens, spec = f["melanoma_sensitivity"], f["melanoma_specificity"]
    assert (sens["k"], sens["n"], spec["k"], spec["n"]) == (2, 3, 3, 4)
    assert np.allclose(sens["ci95"], [0.2077, 0.9385], atol=5e-4)
    assert np.allclose(spec["ci95"], [0.3006, 0.9544], atol=5e-4)
    assert f["melanoma_auc"]["value"] == pytest.approx(8 / 12)
    assert f["balanced_accuracy"]["value"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert f["balanced_accuracy"]["n"] == 6 and f["balanced_accuracy"]["classes"] == 3
    lo, hi = f["melanoma_auc"]["ci95"]
    assert 0 <= lo < 8 / 12 < hi <= 1
    assert "7 cases" in f["caution"]
    text = run_cli(["evaluate", "--reviews", "--job", job_id[:8]], env)
    assert text.returncode == 0, text.stderr
    assert "melanoma sensitivity at the operating point: 0.667 = 2/3 (95 % CI 0.208-0.939)" in text.stdout
    assert "note: from 7 cases, 3 melanomas, 4 non-melanomas: the intervals are wide" in text.stdout
    # Without the local point, the version's own threshold applies (and is named).
    with db.session_scope(engine) as s:
        thresholds.clear_point(s, "site clinic-a", version, "Dr A")
    r = run_cli(["evaluate", "--reviews", "--site", "clinic-a", "--format", "json"], env)
    own = Registry(SHIPPED).meta(version).melanoma_threshold
    assert json.loads(r.stdout)["thresholds"] == {f"version P>={own:.4f}": 7}
    r = run_cli(["evaluate", "--reviews", "--site", "nowhere"], env)
    assert r.returncode == 1 and "no confirmed diagnoses" in r.stderr and "Traceback" not in r.stderr


def test_threshold_set_chooses_the_highest_threshold_reaching_the_sensitivity(tmp_path):
    """Confirmed melanomas at P = 0.9, 0.6, 0.2: two thirds need P >= 0.6, all three P >= 0.2."""
    url, engine, version, _, _ = hand_case(tmp_path)
    env = {"MELANOMA_DATABASE_URL": url, "MELANOMA_MODEL_DIR": str(SHIPPED), "PATH": "/usr/bin:/bin"}
    r = run_cli(["threshold", "set", "--site", "clinic-a", "--sensitivity", "0.66", "--min-melanomas", "3"], env)
    assert r.returncode == 0, r.stderr
    assert "flag at P(melanoma) >= 0.6000 (sensitivity 2/3, specificity 0.750 on 4 non-melanomas" in r.stdout
    r = run_cli(["threshold", "set", "--site", "clinic-a", "--sensitivity", "1", "--min-melanomas", "3"], env)
    with db.session_scope(engine) as s:
        stored = s.scalars(select(OperatingPoint))
        points = [(p.scope, p.model_version, p.threshold, p.cases, p.melanomas) for p in stored]
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.action.startswith("threshold"))))
    assert points == [("site clinic-a", version, pytest.approx(0.2), 7, 3)]  # replaced, not added
    assert actions == ["threshold.set", "threshold.set"]
    listed = run_cli(["threshold", "list"], env)
    assert f"site clinic-a\t{version}\tP>=0.2000" in listed.stdout
    r = run_cli(["threshold", "set", "--site", "clinic-a", "--sensitivity", "0.9"], env)
    assert r.returncode == 1 and "3 confirmed melanomas among 7 cases; a threshold needs at least 10" in r.stderr
    r = run_cli(["threshold", "set", "--site", "x", "--root", "/y", "--sensitivity", "0.9"], env)
    assert r.returncode == 1 and "not both" in r.stderr


def test_the_trainer_service_sees_new_and_corrected_diagnoses_of_its_sites(tmp_path):
    from melanoma.core.settings import Settings
    from melanoma.ml.reviewed import reviews_fingerprint

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    settings = Settings.from_env({"MELANOMA_DATABASE_URL": url})
    _, ids = scored_job(engine, "/clinic/a", [("a1", probs_with(0.7, "melanoma")), ("a2", probs_with(0.1))], "v1")
    _, other = scored_job(engine, "/clinic/b", [("b1", probs_with(0.7, "melanoma"))], "v1", site="clinic-b")
    seen = [reviews_fingerprint(("clinic-a",), settings)]
    with db.session_scope(engine) as s:
        reviews.record(s, s.get(Prediction, other[0]), "nevus", "follow-up", None, "Dr B", "import")
    seen.append(reviews_fingerprint(("clinic-a",), settings))  # another site's: no change
    with db.session_scope(engine) as s:
        reviews.record(s, s.get(Prediction, ids[0]), "nevus", "follow-up", None, "Dr A", "import")
    seen.append(reviews_fingerprint(("clinic-a",), settings))
    with db.session_scope(engine) as s:
        reviews.record(s, s.get(Prediction, ids[0]), "melanoma", "histopathology", None, "Dr A", "import")
    seen.append(reviews_fingerprint(("clinic-a",), settings))
    assert seen[0] == seen[1] != seen[2] != seen[3]


def test_review_and_threshold_mistakes_are_one_line(tmp_path):
    env = {"MELANOMA_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PATH": "/usr/bin:/bin"}
    env["MELANOMA_MODEL_DIR"] = str(SHIPPED)
    for args, says in (
        (["review", "import", str(tmp_path / "missing.csv")], "file not found"),
        (["review", "export", "--out", str(tmp_path / "no" / "such" / "dir.csv")], "cannot write"),
        (["evaluate", "--reviews", "--job", "0123456789ab"], "unknown job id"),
        (["evaluate", "--reviews", "--job", "x", "--site", "y"], "at most one of"),
        (["evaluate", "current", "--site", "y"], "go with --reviews"),
        (["threshold", "set", "--site", "clinic-a", "--sensitivity", "0.9"], "0 confirmed melanomas among 0 cases"),
        (["threshold", "clear", "--site", "clinic-a"], "no local threshold"),
    ):
        r = run_cli(args, env)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_a_reviewed_file_is_read_only_while_its_content_is_the_reviewed_one(tmp_path):
    from melanoma.core import files
    from melanoma.core.errors import ImageError

    image = tmp_path / "a.jpg"
    image.write_bytes(b"the reviewed bytes")
    sha = files.sha256(image.read_bytes())
    assert files.read_unchanged(str(image), sha, (tmp_path,), 1000) == (image, b"the reviewed bytes")
    image.write_bytes(b"other bytes")
    with pytest.raises(ImageError, match="changed since it was reviewed"):
        files.read_unchanged(str(image), sha, (tmp_path,), 1000)
    with pytest.raises(ImageError, match="outside the allowed roots"):
        files.read_unchanged(str(image), sha, (tmp_path / "elsewhere",), 1000)
