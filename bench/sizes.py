"""Throughput at the image sizes clinics really have, and small-job latency.

Three folders of real images, each made unique (bytes after the JPEG end marker) so nothing is
reused: the shared 180–224 px images, the same lesions' originals resized to 600×450, and the
ISIC Archive originals of ``isic-fullres`` (576×540 to 3872×2592). For each size, in one run:

* decode images/s on one core (the preprocessing every design shares);
* model images/s on already decoded images, one call at a time and two at once (as the worker
  runs them, ``MELANOMA_MODEL_CALLS``);
* the sequential ceiling: decode then model in one process, one thread decoding;
* the pipeline (``submit`` -> every row in the database) with one warm worker, default settings,
  each job right after a ceiling run: the ratio is the median over these pairs;
* the one-task-per-image design (``bench/per_image.py``) with one worker, right after each
  pipeline job (its ratio is also the median over these pairs);
* worker peak RSS;
* CPU milliseconds per image of the ceiling and of the worker's processes, and how many cores
  the worker keeps busy (extra work, or more of the machine in use?).

Then the latency of small jobs on a warm worker: ``melanoma submit --wait`` end to end (CLI
start-up included) for jobs of 1, 10, 100 and 1,000 images, p50 and p95.

    python -m bench.sizes [--images 600] [--repeats 2] [--out runs/bench-sizes]
    python -m bench.throughput --sizes [small,600x450,fullres] [...]   # the same, from there

Writes ``sizes.json``, ``sizes.txt`` and ``images_per_s_by_size.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import DEFAULT_DATA, REPO, Redis, Worker, cleanup, env_for, make_folder, real_images
from bench.throughput import machine, run_job, sequential_pass, stats

SIZES = ("small", "600x450", "fullres")


def resized(sources: list[Path], dest: Path, size: tuple[int, int]) -> list[Path]:
    """JPEG copies of ``sources`` at ``size`` (quality 92, as a clinic's export would be)."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sources):
        target = dest / f"r{i:04d}.jpg"
        with Image.open(src) as img:
            img.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(target, quality=92)
        out.append(target)
    return out


def decode_rate(paths: list[Path], repeats: int, size: tuple[int, int] | None = None) -> dict:
    """Images/s of the shared preprocessing (read, decode, resize to ``size``, default the 180-pixel
    input) on one thread."""
    from melanoma.core import images

    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths:
            images.decode(p.read_bytes(), size or images.IMAGE_SIZE)
        rates.append(len(paths) / (time.perf_counter() - t0))
    return stats(rates)


def model_and_ceiling(
    paths: list[Path],
    model_dir: Path,
    batch_size: int,
    repeats: int,
    after_each: Callable[[], None] | None = None,
    calls: int = 2,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per repeat: model images/s on decoded images, one call at a time and ``calls`` at once (as
    the worker runs them, ``MELANOMA_MODEL_CALLS``), the sequential ceiling (decode + model, one
    thread) and its CPU milliseconds per image; ``after_each()`` runs after each repeat (a
    pipeline job, measured in turns)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from melanoma.core import images
    from melanoma.ml.predict import Predictor, configure_tensorflow
    from melanoma.versions.registry import Registry

    configure_tensorflow(0)
    p = Predictor(Registry(model_dir), batch_size=batch_size)
    p.refresh()
    decoded = np.stack([images.decode(x.read_bytes(), p.input_size) for x in paths])
    p.predict(decoded[:batch_size])
    chunks = [decoded[i : i + batch_size] for i in range(0, len(decoded), batch_size)]
    pool = ThreadPoolExecutor(calls)
    model, at_once, ceiling, ceiling_cpu = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p.predict(decoded)
        model.append(len(paths) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        list(pool.map(p.predict, chunks))
        at_once.append(len(paths) / (time.perf_counter() - t0))
        rate, ms = sequential_pass(p, paths, batch_size)
        ceiling.append(rate)
        ceiling_cpu.append(ms)
        if after_each is not None:
            after_each()
    pool.shutdown()
    return model, at_once, ceiling, ceiling_cpu


def small_job_latency(
    work: Path, redis_url: str, model_dir: Path, sources: list[Path], sizes: list[int], repeats: int
) -> dict:
    """Seconds from starting ``melanoma submit --wait`` to its exit, on one warm worker, per job size."""
    db_url = f"sqlite:///{work / 'latency.db'}"
    roots = work / "latency"
    env = env_for(db_url, redis_url, [roots], MELANOMA_MODEL_DIR=str(model_dir))
    worker = Worker(env, work / "latency-worker.log", "lat")
    out = {}
    try:
        worker.wait_ready()
        warm = make_folder(roots / "warm", sources, 8)
        subprocess.run(
            [sys.executable, "-m", "melanoma", "submit", str(warm[0].parent.parent), "--wait"],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        for n in sizes:
            times = []
            for k in range(repeats):
                folder = roots / f"job-{n}-{k}"
                # Salted per job: no job reuses another's results (same sources, same names).
                make_folder(folder, sources[k * n % len(sources) :] + sources, n, salt=f"{n}-{k}".encode())
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "melanoma", "submit", str(folder), "--wait"],
                    env=env,
                    cwd=REPO,
                    check=True,
                    capture_output=True,
                )
                times.append(time.perf_counter() - t0)
            times.sort()
            out[n] = {
                "p50_s": round(statistics.median(times), 3),
                "p95_s": round(times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], 3),
                "runs": len(times),
            }
    finally:
        worker.stop()
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [result["sizes"][s]["label"] for s in SIZES if s in result["sizes"]]
    keys = [
        ("decode_per_core", "decode, one core"),
        ("model", "model only"),
        ("model_2_calls", "model only, 2 calls at once"),
        ("ceiling", "sequential ceiling"),
        ("pipeline_1", "pipeline, 1 worker"),
        ("per_image_1", "one task per image, 1 worker"),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in keys:
        ys = [result["sizes"][s][key]["median"] for s in SIZES if s in result["sizes"] and key in result["sizes"][s]]
        if ys:
            ax.plot(labels[: len(ys)], ys, "o-", label=label)
    ax.set_yscale("log")
    ax.set_ylabel("images/s (log scale)")
    ax.set_xlabel("image size")
    ax.set_title("Throughput by image size (2-core machine)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600, help="images per size")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--latency-sizes", default="1,10,100,1000")
    ap.add_argument("--latency-repeats", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated: per_image,latency")
    ap.add_argument(
        "--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)} ('' = latency only)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-sizes")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    fullres = sorted((args.data / "isic-fullres").rglob("*.jpg"))
    if not fullres:
        sys.exit(f"no images under {args.data / 'isic-fullres'}: pass --data")
    work = Path(tempfile.mkdtemp(prefix="melanoma-bench-sizes-"))
    say = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    from melanoma.versions.registry import Registry

    result: dict = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "images": args.images,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "model_version": Registry(args.model_dir).current(),
        "sizes": {},
    }
    sources = {
        "small": (real_images(args.data)[:2000], "180–224 px"),
        "600x450": (resized(fullres, work / "src-600x450", (600, 450)), "600×450"),
        "fullres": (fullres, "576×540 – 3872×2592"),
    }
    redis = Redis(work)
    try:
        for size in [x for x in SIZES if x in args.sizes.split(",")]:
            src, label = sources[size]
            folder = work / f"images-{size}"
            paths = make_folder(folder, src, args.images)
            r: dict = {"label": label}
            say(f"{size}: decode")
            current = Registry(args.model_dir).current()
            if current is None:
                sys.exit(f"no current version in {args.model_dir}")
            h, w = Registry(args.model_dir).meta(current).input_size[:2]
            input_hw = (int(h), int(w))
            r["decode_per_core"] = decode_rate(paths[:200], args.repeats, input_hw)
            say(f"{size}: model, ceiling and pipeline, in turns")
            extra = {"MELANOMA_BATCH_SIZE": str(args.batch_size)}
            runs: list[dict] = []
            per_image: list[dict] = []

            def after_ceiling(
                folder: Path = folder, extra: dict = extra, runs: list = runs, per_image: list = per_image
            ) -> None:
                runs.append(run_job(folder, args.images, work, redis.url, args.model_dir, 1, "worker", extra))
                if "per_image" not in skip:
                    # Right after its pipeline job, for the same reason: one pair per repeat.
                    per_image.append(
                        run_job(
                            folder,
                            args.images,
                            work,
                            redis.url,
                            args.model_dir,
                            1,
                            "bench.per_image",
                            {"MELANOMA_IMAGES_PER_MESSAGE": "1"},
                        )
                    )

            if "per_image" not in skip:
                say(f"{size}: the one-task-per-image design runs after each pipeline job")
            model, at_once, ceil, ceil_cpu = model_and_ceiling(
                paths, args.model_dir, args.batch_size, args.repeats, after_ceiling
            )
            r["model"], r["model_2_calls"], r["ceiling"] = stats(model), stats(at_once), stats(ceil)
            r["pipeline_1"] = stats([x["images_per_s"] for x in runs])
            # Each pipeline job against the ceiling run just before it: steadier than a ratio of
            # medians on a machine whose speed drifts (a shared VM).
            pairs = [x["images_per_s"] / c for x, c in zip(runs, ceil)]
            r["pipeline_over_ceiling_in_turns"] = stats(pairs)
            r["pipeline_over_ceiling_pairs"] = [round(x, 3) for x in pairs]
            r["pipeline_peak_rss_mb"] = round(max(x["peak_rss_mb"] for x in runs), 1)
            # CPU per image of the worker's processes against the ceiling's: how much of the
            # difference is extra work and how much is keeping more cores busy.
            r["ceiling_cpu_ms_per_image"] = stats(ceil_cpu)
            r["pipeline_cpu_ms_per_image"] = stats([x["worker_cpu_ms_per_image"] for x in runs])
            r["pipeline_cores_busy"] = stats([x["worker_cores_busy"] for x in runs])
            r["pipeline_over_ceiling"] = round(r["pipeline_over_ceiling_in_turns"]["median"], 3)
            if per_image:
                r["per_image_1"] = stats([x["images_per_s"] for x in per_image])
                r["pipeline_over_per_image_in_turns"] = stats(
                    [x["images_per_s"] / y["images_per_s"] for x, y in zip(runs, per_image)]
                )
                r["pipeline_over_per_image"] = round(r["pipeline_over_per_image_in_turns"]["median"], 2)
            result["sizes"][size] = r
            cleanup(folder)
        if "latency" not in skip:
            say("small-job latency")
            result["latency"] = small_job_latency(
                work,
                redis.url,
                args.model_dir,
                real_images(args.data)[:3000],
                [int(n) for n in args.latency_sizes.split(",")],
                args.latency_repeats,
            )
    finally:
        redis.stop()
        cleanup(work)
    (args.out / "sizes.json").write_text(json.dumps(result, indent=1))
    if result["sizes"]:
        plot(result, args.out / "images_per_s_by_size.png")
    lines = [
        f"machine: {result['machine']}",
        f"model: {result['model_version']}; {args.images} images per size; "
        f"batch {args.batch_size}; median of {args.repeats} runs",
        "",
        f"{'size':<22} {'decode/core':>11} {'model':>7} {'2 calls':>7} {'ceiling':>8} {'pipeline':>9} "
        f"{'per image':>10} {'pipe/ceil (pairs)':>19} {'pipe/per-img (pairs)':>20} {'RSS MB':>7}",
    ]
    for size in SIZES:
        r = result["sizes"].get(size)
        if not r:
            continue
        per = r.get("per_image_1", {}).get("median")
        # The median of the pairs' ratios and their range: one run's spread on a machine whose speed drifts.
        in_turns = [r.get(k) for k in ("pipeline_over_ceiling_in_turns", "pipeline_over_per_image_in_turns")]
        ceil_ratio, per_ratio = (f"{x['median']:.2f} ({x['min']:.2f}-{x['max']:.2f})" if x else "-" for x in in_turns)
        lines.append(
            f"{r['label']:<22} {r['decode_per_core']['median']:>11.1f} {r['model']['median']:>7.1f} "
            f"{r['model_2_calls']['median']:>7.1f} "
            f"{r['ceiling']['median']:>8.1f} {r['pipeline_1']['median']:>9.1f} "
            f"{(f'{per:.1f}' if per else '-'):>10} {ceil_ratio:>19} {per_ratio:>20} {r['pipeline_peak_rss_mb']:>7.0f}"
        )
    if result["sizes"]:
        lines += ["", f"{'size':<22} {'CPU ms/image: ceiling':>21} {'worker':>7} {'worker cores busy':>18}"]
        for size in SIZES:
            r = result["sizes"].get(size)
            if r and "ceiling_cpu_ms_per_image" in r:
                lines.append(
                    f"{r['label']:<22} {r['ceiling_cpu_ms_per_image']['median']:>21.2f} "
                    f"{r['pipeline_cpu_ms_per_image']['median']:>7.2f} {r['pipeline_cores_busy']['median']:>18.2f}"
                )
    if "latency" in result:
        lines += ["", "job size   p50 (s)   p95 (s)   (melanoma submit --wait, warm worker)"]
        for n, v in result["latency"].items():
            lines.append(f"{n:>8} {v['p50_s']:>9.2f} {v['p95_s']:>9.2f}")
    text = "\n".join(lines)
    (args.out / "sizes.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
