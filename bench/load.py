"""Load run: a job of 20,000 real images (unique copies) scored by two workers.

Checks that exactly one row per image arrives and records each worker's memory (RSS of the
main process and its pool child) every few seconds; writes ``rss.png`` and ``load.json``.

    python -m bench.load [--images 20000] [--workers 2] [--out runs/load]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, func, select

from bench.common import (
    DEFAULT_DATA,
    REPO,
    Redis,
    RssSampler,
    Worker,
    cleanup,
    env_for,
    make_folder,
    real_images,
    submit_and_wait,
)
from melanoma.store.schema import Prediction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "load")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix="melanoma-load-"))
    print(f"copying {args.images} images into {work}", file=sys.stderr)
    folder = work / "images"
    make_folder(folder, real_images(args.data), args.images)
    db_url = f"sqlite:///{work / 'load.db'}"
    redis = Redis(work)
    env = env_for(db_url, redis.url, [folder])
    workers = {f"w{i + 1}": Worker(env, args.out / f"worker{i + 1}.log", f"w{i + 1}") for i in range(args.workers)}
    try:
        for w in workers.values():
            w.wait_ready()
        sampler = RssSampler(workers)
        sampler.start()
        engine = create_engine(db_url)
        job, elapsed = submit_and_wait(env, folder, engine, 1.0, "--name", "load")
        sampler.stop()
        with engine.connect() as c:
            rows = c.execute(select(func.count()).where(Prediction.job_id == job)).scalar()
            by_worker = dict(
                c.execute(
                    select(Prediction.worker_host, func.count())
                    .where(Prediction.job_id == job)
                    .group_by(Prediction.worker_host)
                ).all()
            )
            errors = c.execute(
                select(func.count()).where(Prediction.job_id == job, Prediction.status == "error")
            ).scalar()
    finally:
        for w in workers.values():
            w.stop()
        redis.stop()

    report = {
        "images": args.images,
        "rows": rows,
        "errors": errors,
        "workers": args.workers,
        "seconds": round(elapsed, 1),
        "images_per_s": round(args.images / elapsed, 1),
        "rows_by_worker": by_worker,
        "rss": {},
    }
    for name in workers:
        series = [(t, mb) for t, n, mb in sampler.samples if n == name]
        warm = [mb for t, mb in series if t > 0.2 * elapsed] or [mb for _, mb in series]
        half = len(warm) // 2
        report["rss"][name] = {
            "peak_mb": round(max(mb for _, mb in series), 1),
            "after_warmup_first_half_median_mb": round(statistics.median(warm[:half] or warm), 1),
            "after_warmup_second_half_median_mb": round(statistics.median(warm[half:]), 1),
        }
    plot(sampler.samples, args.out / "rss.png", args.images, elapsed)
    (args.out / "load.json").write_text(json.dumps(report, indent=1))
    print(f"\n{'images':>8} {'rows':>8} {'errors':>7} {'workers':>8} {'seconds':>8} {'img/s':>7}")
    print(f"{args.images:>8} {rows:>8} {errors:>7} {args.workers:>8} {elapsed:>8.1f} {args.images / elapsed:>7.1f}")
    print(f"\n{'worker':<8} {'rows':>7} {'peak RSS MB':>12} {'median 1st half':>16} {'median 2nd half':>16}")
    for name, r in report["rss"].items():
        n = sum(v for k, v in by_worker.items() if k and k.startswith(name + "@"))
        print(
            f"{name:<8} {n:>7} {r['peak_mb']:>12} {r['after_warmup_first_half_median_mb']:>16} "
            f"{r['after_warmup_second_half_median_mb']:>16}"
        )
    print(f"\nwrote {args.out / 'load.json'} and {args.out / 'rss.png'}")
    ok = rows == args.images
    cleanup(work)
    sys.exit(0 if ok else 1)


def plot(samples, path: Path, images: int, elapsed: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name in sorted({n for _, n, _ in samples}):
        xs = [t for t, n, _ in samples if n == name]
        ax.plot(xs, [mb for _, n, mb in samples if n == name], label=name)
    ax.set_xlabel("seconds since submit")
    ax.set_ylabel("RSS (MB), main + pool process")
    ax.set_title(f"Worker memory over a {images}-image job ({elapsed:.0f} s)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
