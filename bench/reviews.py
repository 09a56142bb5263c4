"""Confirmed diagnoses at a clinic's scale: how long a pathology export takes to import (first time
and again), and how long a job page's figures on its confirmed cases take to compute, for N cases in
a database that already holds M scored images (SQLite, or PostgreSQL with ``--database-url``)::

    python -m bench.reviews [--cases 1000 10000] [--scored 100000] [--out docs/bench/reviews]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select, update

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.lifecycle.sites import sites_with_reviews
from melanoma.ml import clinic
from melanoma.store import confirmed, db, jobs, reviews
from melanoma.store.schema import Job, ModelVersion, Prediction


def _scored_database(url: str, n: int, seed: int = 0) -> str:
    """A database whose one job holds ``n`` scored images (random probabilities); returns the job id."""
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    rng = np.random.default_rng(seed)
    with db.session_scope(engine) as s:
        s.add(ModelVersion(version="bench", architecture="bench", classes=list(CLASS_NAMES), input_size=[224, 224]))
        job_id, _ = jobs.create_job(s, Path("/clinic"), [], site="clinic-a")
        s.execute(update(Job).where(Job.id == job_id).values(n_images=n))
        for start in range(0, n, 5000):
            probs = rng.dirichlet(np.ones(len(CLASS_NAMES)) * 0.5, min(5000, n - start))
            s.execute(
                insert(Prediction),
                [
                    {
                        "job_id": job_id,
                        "image_path": f"/clinic/{start + i:07d}.jpg",
                        "sha256": f"{start + i:064x}",
                        "status": "ok",
                        "model_version": "bench",
                        "predicted_class": CLASS_NAMES[int(p.argmax())],
                        "confidence": float(p.max()),
                        "melanoma_flag": bool(p[3] >= 0.2),
                        **{c: float(v) for c, v in zip(PROB_COLUMNS, p)},
                    }
                    for i, p in enumerate(probs)
                ],
            )
    return job_id


def run(url: str, cases: int, job_id: str, seed: int = 1) -> dict:
    engine = db.make_engine(url)
    rng = np.random.default_rng(seed)
    with db.session_scope(engine) as s:
        total = s.scalar(select(Job.n_images).where(Job.id == job_id)) or 0
    picked = rng.choice(total, cases, replace=False)
    text = "image_path,diagnosis,basis\n" + "".join(
        f"/clinic/{i:07d}.jpg,{CLASS_NAMES[rng.integers(len(CLASS_NAMES))]},histopathology\n" for i in picked
    )
    out: dict = {"cases": cases, "scored_images": int(total)}
    for label in ("import_s", "import_again_s"):
        t = time.perf_counter()
        with db.session_scope(engine) as s:
            report = reviews.import_csv(s, text, "bench")
        out[label] = round(time.perf_counter() - t, 3)
        assert not report.problems
    with db.session_scope(engine) as s:
        job = s.get(Job, job_id)
        t = time.perf_counter()
        found = confirmed.cases(s, job=job)
        out["gather_cases_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    sites_with_reviews(engine, 1)
    out["sites_with_reviews_s"] = round(time.perf_counter() - t, 3)
    clinic.figures(["melanoma", "nevus"], np.eye(len(CLASS_NAMES))[[3, 4]], [True, False])  # imports, once per process
    t = time.perf_counter()
    clinic.figures(found.diagnoses, found.probs, found.flags)
    out["figures_s"] = round(time.perf_counter() - t, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--scored", type=int, default=100_000)
    ap.add_argument("--database-url", default=None, help="an empty database (default: a new SQLite file)")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.txt")
    args = ap.parse_args()
    rows = []
    for n in args.cases:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite:///{tmp}/bench.db"
            job_id = _scored_database(url, args.scored)
            rows.append(run(url, n, job_id))
            print(json.dumps(rows[-1]), flush=True)
    backend = (args.database_url or "sqlite").split(":", 1)[0]
    table = [
        f"Confirmed diagnoses on {backend}, one job of {args.scored:,} scored images (python -m bench.reviews)",
        "",
        "| cases | import | import again | gather a job's cases | figures (with intervals) | the gate's sites |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['cases']:,} | {r['import_s']:.2f} s | {r['import_again_s']:.2f} s | {r['gather_cases_s']:.2f} s "
            f"| {r['figures_s']:.2f} s | {r['sites_with_reviews_s']:.2f} s |"
            for r in rows
        ),
    ]
    print("\n".join(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"backend": backend, "runs": rows}, indent=1) + "\n")
        args.out.with_suffix(".txt").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
