"""The viewer on a 100,000-image job: how long each page takes, served by a real `melanoma serve`.

Builds a results database with one job of ``--rows`` predictions (probabilities drawn at random,
10 % errors, a few pending), starts the viewer as its own process (start-up time measured to the
first answer of ``/healthz``) and times, over ``--repeats`` requests each: the jobs page, the first
page of the grid in each sort and filter, pages deep in the job (following the "next" cursor
links), the image page (with its previous/next neighbours) and the progress poll.

    python -m bench.viewer [--rows 100000] [--repeats 5] [--database-url URL] [--out runs/bench-viewer]

Writes ``viewer.json`` and ``viewer.txt`` (target: every page under 200 ms; start-up under 2 s).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import update

from bench.common import REPO, free_port
from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.store import db, jobs
from melanoma.store.schema import Prediction

TARGET_MS = 200.0


def build(database_url: str, rows: int, seed: int = 1) -> str:
    """A job of ``rows`` predictions in ``database_url``; returns its id."""
    engine = db.make_engine(database_url)
    db.ensure_schema(engine)
    rng = random.Random(seed)
    paths = [f"/srv/clinic/2026/{i // 1000:03d}/lesion-{i:06d}.jpg" for i in range(rows)]
    with db.session_scope(engine) as s:
        job_id, ids = jobs.create_job(s, Path("/srv/clinic/2026"), paths, name=f"{rows:,} images")
    chunk: list[dict] = []
    for i in ids:
        u = rng.random()
        if u < 0.1:
            chunk.append({"id": i, "status": "error", "error": "corrupt image: broken data stream"})
        elif u < 0.11:
            continue  # pending
        else:
            raw = [rng.random() ** 3 for _ in CLASS_NAMES]
            total = sum(raw)
            probs = [p / total for p in raw]
            top = max(range(len(probs)), key=probs.__getitem__)
            chunk.append(
                {
                    "id": i,
                    "status": "ok",
                    "predicted_class": CLASS_NAMES[top],
                    "confidence": probs[top],
                    "melanoma_flag": probs[3] >= 0.2,
                    "sha256": f"{i:064x}",
                    "model_version": None,
                    **dict(zip(PROB_COLUMNS, probs)),
                }
            )
        if len(chunk) >= 5000:
            _write(engine, chunk)
            chunk = []
    _write(engine, chunk)
    if engine.dialect.name == "postgresql":
        # What autovacuum does soon after a bulk load in production: planner statistics and the
        # visibility map that index-only scans need.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE predictions")
    engine.dispose()
    return job_id


def _write(engine, chunk: list[dict]) -> None:
    if not chunk:
        return
    with db.session_scope(engine) as s:
        for status in ("ok", "error"):
            part = [c for c in chunk if c["status"] == status]
            if part:
                keys = set().union(*part)
                s.execute(update(Prediction), [{k: c.get(k) for k in keys} for c in part])


def timed(client: httpx.Client, path: str, repeats: int) -> dict:
    times, status = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        status = r.status_code
    return {
        "path": path,
        "status": status,
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--database-url", default=None, help="default: a new SQLite file")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-viewer")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    url = args.database_url or f"sqlite:///{tmp / 'viewer.db'}"
    t = time.perf_counter()
    job = build(url, args.rows)
    print(f"built a job of {args.rows:,} rows in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    port = free_port()
    env = {**_env(), "MELANOMA_DATABASE_URL": url, "MELANOMA_CACHE_DIR": str(tmp / "cache")}
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "melanoma", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("the viewer did not start")
        time.sleep(0.02)
    startup = time.perf_counter() - started
    results = []
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            pages = [
                "/",
                f"/jobs/{job}/progress.json",
                f"/jobs/{job}",
                f"/jobs/{job}?order=asc",
                f"/jobs/{job}?sort=p_nevus",
                f"/jobs/{job}?sort=path",
                f"/jobs/{job}?predicted=nevus",
                f"/jobs/{job}?flagged=1",
                f"/jobs/{job}?errors=1",
                f"/jobs/{job}?min_prob=0.5",
                f"/jobs/{job}?sort=p_seborrheic_keratosis&predicted=seborrheic_keratosis&min_prob=0.3",
            ]
            for p in pages:
                results.append({"page": p.replace(job, "JOB"), **timed(c, p, args.repeats)})
            # Deep pages: follow the "next" link 30 times in the default order and by path.
            for first in (f"/jobs/{job}", f"/jobs/{job}?sort=path"):
                path = first
                for _ in range(30):
                    m = re.search(r'id="next-page" href="([^"]+)"', c.get(path).text)
                    assert m, "no next link"
                    path = m.group(1).replace("&amp;", "&")
                r = timed(c, path, args.repeats)
                results.append({"page": f"{first.replace(job, 'JOB')} after 30 pages (1,800 images in)", **r})
            grid = c.get(f"/jobs/{job}").text
            image = re.findall(r'href="(/images/\d+)"', grid)[5]
            results.append({"page": "/images/ID (with previous / next)", **timed(c, image, args.repeats)})
            results.append({"page": "/images/ID?sort=p_nevus", **timed(c, image + "?sort=p_nevus", args.repeats)})
    finally:
        server.terminate()
        server.wait()
    slowest = max(r["median_ms"] for r in results)
    report = {
        "rows": args.rows,
        "database": url.split(":", 1)[0],
        "startup_s": round(startup, 2),
        "pages": results,
        "slowest_median_ms": slowest,
        "target_ms": TARGET_MS,
        "met": slowest < TARGET_MS,
    }
    (args.out / "viewer.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"viewer on one job of {args.rows:,} images ({report['database']}); start-up {startup:.2f} s to first answer",
        "",
        "| page | median ms | max ms |",
        "|---|---|---|",
        *[f"| `{r['page']}` | {r['median_ms']} | {r['max_ms']} |" for r in results],
    ]
    (args.out / "viewer.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MELANOMA_")}


if __name__ == "__main__":
    main()
