"""Throughput benchmark: how close the pipeline comes to what the hardware allows.

Starts its own Redis (and PostgreSQL for the query figures), copies real images from the shared
data set (unique copies: nothing is reused), and measures:

1. ceiling: decode + model in one process, no queue, no database, best batch size;
2. pipeline: ``submit`` -> every row in the database, images/s and enqueue-to-row latency, with
   1 and 2 worker processes, each started and warmed by a 64-image job of other images first;
3. one-task-per-image: the common design (``bench/per_image.py``), same workers, same images;
4. producer enqueue rate for 100,000 paths;
5. query time for one job's results and for "all melanoma above 0.8 this month" at 1,000,000 rows,
   on SQLite and PostgreSQL;
6. worker peak memory (RSS of the worker and its pool process), and the CPU time its processes
   spend per image, against the ceiling's (and how many cores they keep busy).

Each figure is the median of ``--repeats`` runs, with min and max. Prints a table and writes JSON:

    python -m bench.throughput [--images 2000] [--repeats 3] [--out runs/bench]
    python -m bench.throughput --sizes      # by image size instead (bench/sizes.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    DEFAULT_DATA,
    LIB,
    REPO,
    Redis,
    RssSampler,
    Worker,
    cleanup,
    env_for,
    free_port,
    make_folder,
    real_images,
    submit_and_wait,
)


def stats(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": len(values),
    }


# 1. ceiling ------------------------------------------------------------------------------------


def sequential_pass(predictor, paths: list[Path], batch_size: int) -> tuple[float, float]:
    """The sequential ceiling's loop: read, decode and score ``paths`` a batch at a time in this
    process, on one thread; returns images/s and CPU milliseconds per image."""
    import numpy as np

    from melanoma.core import images

    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(paths), batch_size):
        batch = paths[start : start + batch_size]
        predictor.predict(np.stack([images.decode(x.read_bytes(), predictor.input_size) for x in batch]))
    return len(paths) / (time.perf_counter() - t0), (time.process_time() - c0) / len(paths) * 1e3


def ceiling(
    paths: list[Path],
    model_dir: Path,
    batch_sizes: list[int],
    repeats: int,
    tf_threads: int = 0,
    precision: str = "float32",
    scales: tuple[float, ...] = (1.0,),
) -> dict:
    """Decode then predict, in this process, for each batch size; images/s."""
    import numpy as np

    from melanoma.ml.predict import Predictor, configure_tensorflow
    from melanoma.versions.registry import Registry

    configure_tensorflow(tf_threads)
    out = {}
    for bs in batch_sizes:
        p = Predictor(Registry(model_dir), batch_size=bs, precision=precision, scales=scales)
        p.refresh()
        rates, cpu = [], []
        for _ in range(repeats):
            rate, ms = sequential_pass(p, paths, bs)
            rates.append(rate)
            cpu.append(ms)
        out[bs] = stats(rates)
        out[bs]["cpu_ms_per_image"] = round(float(np.median(cpu)), 2)
    best = max(out, key=lambda b: out[b]["median"])
    return {
        "by_batch_size": out,
        "best_batch_size": best,
        "images_per_s": out[best],
        "cpu_ms_per_image": out[best]["cpu_ms_per_image"],
    }


# 2 and 3. pipeline and one-task-per-image -------------------------------------------------------


def run_job(
    folder: Path,
    n: int,
    workdir: Path,
    redis_url: str,
    model_dir: Path,
    workers: int,
    app: str,
    extra_env: dict[str, str],
    gpus: int = 0,
) -> dict:
    """One job through ``workers`` worker processes running ``app``; returns rate, latency and RSS."""
    from sqlalchemy import create_engine, select

    from melanoma.store.schema import Prediction

    db_url = f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    warm = workdir / f"warm-up-{folder.name}"
    if not warm.is_dir():
        # Salted: other bytes than the job's copies, so the job reuses none of the warm-up's results.
        make_folder(warm, sorted(folder.rglob("*.jpg"))[:64], 64, salt=b"warm-up")
    env = env_for(db_url, redis_url, [folder, warm], MELANOMA_MODEL_DIR=str(model_dir), **extra_env)
    procs = {}
    for i in range(workers):
        name = f"w{i + 1}"
        log = workdir / f"{app.replace('.', '_')}-{name}-{uuid.uuid4().hex[:4]}.log"
        # one worker per GPU: each sees only its own card
        wenv = dict(env, CUDA_VISIBLE_DEVICES=str(i % gpus)) if gpus else env
        procs[name] = Worker(wenv, log, name, app=None if app == "worker" else app)
    try:
        for w in procs.values():
            w.wait_ready()
        engine = create_engine(db_url)
        # Workers are long-running: time a job on warm workers (first calls, connections and
        # the first batch's imports done), as the in-process ceiling is timed after a warm-up.
        submit_and_wait(env, warm, engine)
        sampler = RssSampler(procs, interval=1.0)
        sampler.start()
        # CPU time of the workers' processes, and of the (finished) submit command, during the job.
        cpu0, sub0 = _cpu_seconds(procs), _children_cpu_seconds()
        job, elapsed = submit_and_wait(env, folder, engine)
        worker_cpu, submit_cpu = _cpu_seconds(procs) - cpu0, _children_cpu_seconds() - sub0
        sampler.stop()
        with engine.connect() as c:
            rows = c.execute(
                select(Prediction.created_at, Prediction.scored_at, Prediction.status).where(Prediction.job_id == job)
            ).all()
        engine.dispose()
    finally:
        for w in procs.values():
            w.stop()
    lat = sorted((r.scored_at - r.created_at).total_seconds() for r in rows)
    ok = sum(1 for r in rows if r.status == "ok")
    return {
        "images_per_s": n / elapsed,
        "seconds": elapsed,
        "ok": ok,
        "rows": len(rows),
        "latency_p50_s": lat[len(lat) // 2],
        "latency_p95_s": lat[int(len(lat) * 0.95) - 1],
        "peak_rss_mb": max((mb for _, _, mb in sampler.samples), default=0.0),
        "worker_cpu_ms_per_image": worker_cpu / n * 1e3,
        "worker_cores_busy": worker_cpu / elapsed,
        "submit_cpu_s": submit_cpu,
    }


def _cpu_seconds(workers: dict) -> float:
    """User + system CPU seconds of every process of ``workers`` so far."""
    import psutil

    total = 0.0
    for w in workers.values():
        for pid in w.pids():
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def _children_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # children that have exited: the submit commands
    return r.ru_utime + r.ru_stime


def pipeline_figures(
    folder, n, workdir, redis_url, model_dir, workers, app, repeats, extra_env, gpus=0, before_each=None
) -> dict:
    """The pipeline's figures over ``repeats`` jobs; ``before_each()`` runs before each job (a
    ceiling run, so that the two are measured in turns and a slow spell of the machine shows in both)."""
    runs = []
    for _ in range(repeats):
        if before_each is not None:
            before_each()
        runs.append(run_job(folder, n, workdir, redis_url, model_dir, workers, app, extra_env, gpus))
    return {
        "images_per_s": stats([r["images_per_s"] for r in runs]),
        "latency_p50_s": stats([r["latency_p50_s"] for r in runs]),
        "latency_p95_s": stats([r["latency_p95_s"] for r in runs]),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "worker_cpu_ms_per_image": stats([r["worker_cpu_ms_per_image"] for r in runs]),
        "worker_cores_busy": stats([r["worker_cores_busy"] for r in runs]),
        "submit_cpu_s": stats([r["submit_cpu_s"] for r in runs]),
        "rows_ok": [r["ok"] for r in runs],
        "images_per_s_runs": [round(r["images_per_s"], 2) for r in runs],
    }


# 4. enqueue ------------------------------------------------------------------------------------


def enqueue_rate(redis_url: str, n: int, repeats: int) -> dict:
    import redis

    from melanoma.pipeline.broker import broker_client, enqueue

    rates = []
    for _ in range(repeats):
        queue = "bench-enqueue-" + uuid.uuid4().hex[:6]
        client = broker_client(redis_url)
        t0 = time.perf_counter()
        enqueue(client, queue, range(n))
        rates.append(n / (time.perf_counter() - t0))
        redis.Redis.from_url(redis_url).delete(queue)
    return {"paths": n, "paths_per_s": stats(rates)}


# 5. queries at a million rows ---------------------------------------------------------------------

FILL_SQLITE = """
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < :n - 1)
INSERT INTO predictions (job_id, image_path, sha256, status, predicted_class, confidence, p_melanoma,
                         p_nevus, model_version, worker_host, reused, created_at, scored_at)
SELECT 'job' || printf('%05d', i / 2000), '/data/img' || i || '.jpg', NULL, 'ok',
       CASE WHEN abs(random()) % 10 = 0 THEN 'melanoma' ELSE 'nevus' END,
       0.5, (abs(random()) % 1000000) / 1000000.0 * (abs(random()) % 1000000) / 1000000.0, 0.5, 'bench', 'bench', 0,
       datetime('now', '-' || (i % 365) || ' days'), datetime('now', '-' || (i % 365) || ' days')
FROM seq
"""

FILL_POSTGRES = """
INSERT INTO predictions (job_id, image_path, sha256, status, predicted_class, confidence, p_melanoma,
                         p_nevus, model_version, worker_host, reused, created_at, scored_at)
SELECT 'job' || lpad((i / 2000)::text, 5, '0'), '/data/img' || i || '.jpg', NULL, 'ok',
       CASE WHEN random() < 0.1 THEN 'melanoma' ELSE 'nevus' END,
       0.5, random() * random(), 0.5, 'bench', 'bench', false,
       now() - (i % 365) * interval '1 day', now() - (i % 365) * interval '1 day'
FROM generate_series(0, :n - 1) AS i
"""


def query_times(url: str, n: int, repeats: int) -> dict:
    from sqlalchemy import insert, select, text

    from melanoma.store import db, jobs
    from melanoma.store.schema import Job, ModelVersion, Prediction

    engine = db.make_engine(url)
    db.ensure_schema(engine)
    with engine.begin() as c:
        c.execute(
            insert(ModelVersion).values(version="bench", architecture="origin", classes=[], input_size=[], metrics={})
        )
        c.execute(
            insert(Job),
            [
                {"id": f"job{j:05d}", "name": None, "root": "/data", "n_images": 2000, "created_at": datetime.now(UTC)}
                for j in range((n + 1999) // 2000)
            ],
        )
        t0 = time.perf_counter()
        c.execute(text(FILL_SQLITE if engine.dialect.name == "sqlite" else FILL_POSTGRES), {"n": n})
        fill_s = time.perf_counter() - t0
    with engine.begin() as c:
        c.execute(text("ANALYZE"))
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if engine.dialect.name == "sqlite":
        month = month.replace(tzinfo=None)
    one_job, melanoma = [], []
    found = {}
    for k in range(repeats):
        with db.session_scope(engine) as s:
            job = s.get(Job, f"job{(k * 97) % (n // 2000):05d}")
            assert job is not None, "the seeded jobs are job00000 onwards"
            t0 = time.perf_counter()
            rows = list(jobs.job_results(s, job))
            one_job.append((time.perf_counter() - t0) * 1000)
            found["one_job_rows"] = len(rows)
            t0 = time.perf_counter()
            mel = s.execute(
                select(Prediction.job_id, Prediction.image_path, Prediction.p_melanoma, Prediction.scored_at)
                .where(Prediction.p_melanoma >= 0.8, Prediction.scored_at >= month)
                .order_by(Prediction.p_melanoma.desc())
            ).all()
            melanoma.append((time.perf_counter() - t0) * 1000)
            found["melanoma_rows"] = len(mel)
    engine.dispose()
    return {
        "rows": n,
        "fill_s": round(fill_s, 1),
        "one_job_ms": stats(one_job),
        "melanoma_this_month_ms": stats(melanoma),
        **found,
    }


def start_postgres(workdir: Path) -> tuple[str, Path]:
    d, port = Path(f"/tmp/melanoma-bench-pg-{uuid.uuid4().hex[:6]}"), free_port()
    subprocess.run(["bash", "-c", f'source "{LIB}"; start_postgres "{d}" {port}'], check=True)
    return f"postgresql+psycopg://melanoma@127.0.0.1:{port}/melanoma", d


def stop_postgres(d: Path) -> None:
    subprocess.run(["bash", "-c", f'source "{LIB}"; stop_postgres "{d}"'], check=False)
    cleanup(d)


# report ----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--batch-sizes", default="8,16,32,64")
    ap.add_argument(
        "--worker-batch",
        type=int,
        default=0,
        help="MELANOMA_BATCH_SIZE for the pipeline (0: the ceiling's best batch size, else 32)",
    )
    ap.add_argument(
        "--tf-threads",
        type=int,
        default=0,
        help="MELANOMA_TF_THREADS for ceiling, pipeline and baseline alike (0: TF decides)",
    )
    ap.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "mixed_float16", "mixed_bfloat16"],
        help="MELANOMA_PRECISION for ceiling, pipeline and baseline alike",
    )
    ap.add_argument(
        "--tta-scales",
        default="1",
        help="MELANOMA_TTA_SCALES for ceiling, pipeline and baseline alike (e.g. 1,1.18)",
    )
    ap.add_argument("--query-rows", type=int, default=1_000_000)
    ap.add_argument("--enqueue-paths", type=int, default=100_000)
    ap.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs on this machine: worker i gets CUDA_VISIBLE_DEVICES=i (use with larger batches)",
    )
    ap.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1,2 or 1,4 for 4 GPUs")
    ap.add_argument(
        "--skip", default="", help="comma-separated parts to skip: ceiling,pipeline,per_image,enqueue,queries"
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    ap.add_argument(
        "--sizes",
        nargs="?",
        const="small,600x450,fullres",
        default=None,
        help="instead: ceiling, pipeline and one task per image at three image sizes (bench.sizes; "
        "--images, --repeats, --data, --model-dir and --out pass on)",
    )
    args = ap.parse_args()
    if args.sizes is not None:
        from bench import sizes

        given = {a.split("=")[0] for a in sys.argv[1:]}
        forward = ["--sizes", args.sizes, "--data", str(args.data), "--model-dir", str(args.model_dir)]
        forward += ["--out", str(args.out if "--out" in given else REPO / "runs" / "bench-sizes")]
        forward += ["--images", str(args.images)] if "--images" in given else []
        forward += ["--repeats", str(args.repeats)] if "--repeats" in given else []
        sizes.main(forward)
        return
    skip = set(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="melanoma-bench-"))
    result: dict = {
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": args.images,
        "repeats": args.repeats,
        "model_dir": str(args.model_dir),
    }
    from melanoma.versions.registry import Registry

    result["model_version"] = Registry(args.model_dir).current()
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    folder = work / "images"
    paths = make_folder(folder, real_images(args.data), args.images)
    result["precision"] = args.precision
    scales = tuple(float(x) for x in args.tta_scales.split(","))
    result["tta_scales"] = list(scales)
    # Ceiling (this process), pipeline and baseline workers all run with these.
    model_env = {
        "MELANOMA_TF_THREADS": str(args.tf_threads),
        "MELANOMA_PRECISION": args.precision,
        "MELANOMA_TTA_SCALES": args.tta_scales,
    }
    redis = Redis(work)
    try:
        if "ceiling" not in skip:
            say("ceiling")
            result["ceiling"] = ceiling(
                paths,
                args.model_dir,
                [int(b) for b in args.batch_sizes.split(",")],
                args.repeats,
                args.tf_threads,
                args.precision,
                scales,
            )
        # Batch size and prefetch are tuned together: the workers get the batch size at which the
        # model ran fastest here (prefetch follows from it, see Settings.messages_per_batch).
        worker_batch = args.worker_batch or result.get("ceiling", {}).get("best_batch_size", 32)
        result["worker_batch_size"] = worker_batch
        result["worker_tf_threads"] = args.tf_threads
        extra = {"MELANOMA_BATCH_SIZE": str(worker_batch), **model_env}
        counts = [int(n) for n in args.workers.split(",")]
        if "pipeline" not in skip:
            for n in counts:
                say(f"pipeline, {n} worker(s)" + (", in turns with the ceiling" if n == 1 else ""))
                paired: list[float] = []
                paired_cpu: list[float] = []

                def ceiling_run(paired: list[float] = paired, paired_cpu: list[float] = paired_cpu) -> None:
                    c = ceiling(paths, args.model_dir, [worker_batch], 1, args.tf_threads, args.precision, scales)
                    paired.append(c["images_per_s"]["median"])
                    paired_cpu.append(c["cpu_ms_per_image"])

                result[f"pipeline_{n}"] = pipeline_figures(
                    folder,
                    args.images,
                    work,
                    redis.url,
                    args.model_dir,
                    n,
                    "worker",
                    args.repeats,
                    extra,
                    args.gpus,
                    before_each=ceiling_run if n == 1 and "ceiling" not in skip else None,
                )
                if paired:
                    # On a machine whose speed drifts (a shared VM), the ratio of each ceiling run
                    # to the pipeline job right after it is steadier than a ratio of medians.
                    result[f"pipeline_{n}"]["ceiling_in_turns"] = stats(paired)
                    result[f"pipeline_{n}"]["over_ceiling_in_turns"] = stats(
                        [p / c for p, c in zip(result[f"pipeline_{n}"]["images_per_s_runs"], paired)]
                    )
                    # Decode and model on the same images, for the worker's CPU per image to be read against.
                    result[f"pipeline_{n}"]["ceiling_cpu_ms_per_image"] = stats(paired_cpu)
        if "per_image" not in skip:
            for n in counts:
                say(f"one task per image, {n} worker(s)")
                result[f"per_image_{n}"] = pipeline_figures(
                    folder,
                    args.images,
                    work,
                    redis.url,
                    args.model_dir,
                    n,
                    "bench.per_image",
                    max(1, args.repeats - 1),
                    {"MELANOMA_IMAGES_PER_MESSAGE": "1", **model_env},
                    args.gpus,
                )
        if "enqueue" not in skip:
            say("enqueue")
            result["enqueue"] = enqueue_rate(redis.url, args.enqueue_paths, args.repeats)
        if "queries" not in skip:
            say("queries, SQLite")
            result["queries_sqlite"] = query_times(f"sqlite:///{work / 'million.db'}", args.query_rows, 5)
            say("queries, PostgreSQL")
            pg_url, pg_dir = start_postgres(work)
            try:
                result["queries_postgres"] = query_times(pg_url, args.query_rows, 5)
            finally:
                stop_postgres(pg_dir)
    finally:
        redis.stop()
        cleanup(work)
    report(result, args.out)


def report(r: dict, out: Path) -> None:
    (out / "throughput.json").write_text(json.dumps(r, indent=1, default=str))
    lines = [
        f"machine: {r['machine']}",
        f"model: {r['model_version']}; {r['images']} images; median of {r['repeats']} runs [min–max]",
        f"workers: MELANOMA_BATCH_SIZE={r.get('worker_batch_size')}, "
        f"MELANOMA_TF_THREADS={r.get('worker_tf_threads') or 'TensorFlow default'}, "
        f"MELANOMA_PRECISION={r.get('precision', 'float32')}, "
        f"MELANOMA_TTA_SCALES={','.join(f'{x:g}' for x in r.get('tta_scales', [1]))}",
        "",
    ]

    def fig(s: dict, unit: str = "", digits: int = 1) -> str:
        return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"

    lines.append(f"{'measure':<46} value")
    if "ceiling" in r:
        c = r["ceiling"]
        for bs, s in c["by_batch_size"].items():
            lines.append(f"{'ceiling, batch ' + str(bs) + ' (img/s)':<46} {fig(s)}")
    keys = sorted(k for k in r if k.startswith(("pipeline_", "per_image_")))
    for key in keys:
        n = key.rsplit("_", 1)[1]
        label = f"{'pipeline' if key.startswith('pipeline') else 'one task per image'}, {n} worker(s)"
        if key in r:
            p = r[key]
            lines.append(f"{label + ' (img/s)':<46} {fig(p['images_per_s'])}")
            lines.append(
                f"{'  latency p50 / p95 (s)':<46} {p['latency_p50_s']['median']:.2f} / "
                f"{p['latency_p95_s']['median']:.2f}"
            )
            lines.append(f"{'  worker peak RSS (MB)':<46} {p['peak_rss_mb']:.0f}")
            if "worker_cpu_ms_per_image" in p:
                lines.append(
                    f"{'  worker CPU per image (ms) / cores busy':<46} {p['worker_cpu_ms_per_image']['median']:.2f}"
                    f" / {p['worker_cores_busy']['median']:.2f}"
                )
            if "ceiling_in_turns" in p:
                lines.append(f"{'  ceiling, each run before a job (img/s)':<46} {fig(p['ceiling_in_turns'])}")
                lines.append(f"{'  pipeline / that ceiling, per pair':<46} {fig(p['over_ceiling_in_turns'], digits=3)}")
                if "ceiling_cpu_ms_per_image" in p:
                    lines.append(
                        f"{'  that ceiling: CPU per image (ms)':<46} {fig(p['ceiling_cpu_ms_per_image'], digits=2)}"
                    )
    if "enqueue" in r:
        lines.append(
            f"{'enqueue ' + str(r['enqueue']['paths']) + ' paths (paths/s)':<46} {fig(r['enqueue']['paths_per_s'])}"
        )
    for key, label in (("queries_sqlite", "SQLite"), ("queries_postgres", "PostgreSQL")):
        if key in r:
            q = r[key]
            one_job = f"{label}, one job of {q['one_job_rows']} rows (ms)"
            lines.append(f"{one_job:<46} {fig(q['one_job_ms'])}")
            lines.append(
                f"{label + ', melanoma ≥ 0.8 this month (ms)':<46} {fig(q['melanoma_this_month_ms'])}"
                f"  ({q['melanoma_rows']} rows of {q['rows']})"
            )
    best_pipe = max((r[k]["images_per_s"]["median"] for k in keys if k.startswith("pipeline_")), default=None)
    ratios = {}
    if best_pipe and "ceiling" in r:
        ratios["pipeline_over_ceiling"] = round(best_pipe / r["ceiling"]["images_per_s"]["median"], 3)
    if "over_ceiling_in_turns" in r.get("pipeline_1", {}):
        ratios["pipeline_1_over_ceiling_in_turns"] = round(r["pipeline_1"]["over_ceiling_in_turns"]["median"], 3)
    for n in sorted({k.rsplit("_", 1)[1] for k in keys}):
        if f"pipeline_{n}" in r and f"per_image_{n}" in r:
            ratios[f"pipeline_over_per_image_{n}_workers"] = round(
                r[f"pipeline_{n}"]["images_per_s"]["median"] / r[f"per_image_{n}"]["images_per_s"]["median"], 2
            )
    r["ratios"] = ratios
    (out / "throughput.json").write_text(json.dumps(r, indent=1, default=str))
    lines.append("")
    for k, v in ratios.items():
        lines.append(f"{k:<46} {v}")
    text_out = "\n".join(lines)
    (out / "throughput.txt").write_text(text_out + "\n")
    print(text_out)


if __name__ == "__main__":
    main()
