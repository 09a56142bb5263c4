"""A new clinic's own confirmed cases: how many does a version need before it ranks that clinic's
melanomas well, when the clinic's dermatoscope is one it never trained on?

ISIC 2017, the source the left-out versions never saw, plays the new clinic, along the path a clinic
takes: its images are scored as jobs of a site by a real worker (Redis, Celery, SQLite), the
confirmed diagnoses of some of them are recorded with ``melanoma review import``, and a stage trained
with ``--reviews-site`` continues the left-out version on them. ISIC 2017 is split in two halves by
image, stratified by class: the clinic's cases are drawn from the first (nested: the first 100 drawn
are among the first 300), the second half is never trained on and scores every version.

    python -m bench.site_cases prepare [--data D] [--cases 100,300,all] [--out runs/site-cases]
    RUNS="pretrained-lite1-site-0 pretrained-lite1-site-all ..." scripts/train-pretrained.sh
    python -m bench.site_cases evaluate BASE VERSION... [--out runs/site-cases]

``prepare`` writes one folder per number of cases (copies of the files, so each is a job of its own
site, ``isic2017-N``) and prints the sites; ``evaluate`` scores the held-out half with the left-out
version (BASE), the versions continued from it without any site cases (controls: what more training
alone does) and those trained on the site's cases (each compared with the control of its seed and epochs), and
writes ``site_cases.{md,json}``: per version the held-out half's melanoma and seborrheic keratosis
AUC, specificity at 85 % sensitivity, the median P(melanoma) of its nevi against that of the base
version's HAM10000 test nevi, and the melanoma AUC change from BASE and from the control with paired
bootstrap 95 % intervals; sensitivity and specificity at the version's own threshold and at the site
threshold its untrained confirmed cases give, each with a 95 % interval (``operating_points``); per
stage the mean over its runs, its runs' mean change from their controls with one paired interval over
the images and a run-to-run interval over the runs, and how many runs clear their control
(``stage_means``); and
``site_cases.png``, the AUCs against the cases trained on. Each version's probabilities are kept in
``OUT/scores`` (``bench.scores``), so a rerun with one version more scores only that one
(``--rescore`` scores all again).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import scores
from bench.bn_adapt import _fmt
from bench.common import DEFAULT_DATA, REPO, Redis, Worker, env_for, submit_and_wait
from bench.ensemble import COLUMNS, TRAINING_FOLDERS, _Images, _summary
from melanoma.core import files
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import clinic, data, evaluate
from melanoma.ml.clinic import MELANOMA
from melanoma.ml.splits import file_in_source, separate_sources
from melanoma.versions.registry import SPLIT_FILE, Registry

SOURCE = "isic2017"
HOLDOUT_FILE = "held_out.json"


def _halves(data_dirs: tuple[Path, ...], seed: int) -> tuple[list[data.Sample], list[data.Sample]]:
    """ISIC 2017's images (its own files) in two halves, stratified by class: the clinic's pool, in
    the seeded order its cases are confirmed in, and the held-out half."""
    kept, _ = data.read_clean(data_dirs)
    _, external = separate_sources(kept, {SOURCE})
    own = sorted((s for s in external if file_in_source(s, SOURCE) == s.path), key=lambda s: str(s.path))
    rng = np.random.default_rng(seed)
    pool: list[data.Sample] = []
    held: list[data.Sample] = []
    for label in sorted({s.label for s in own}):
        members = [own[i] for i in rng.permutation(len(own)) if own[i].label == label]
        pool += members[: len(members) // 2]
        held += members[len(members) // 2 :]
    return [pool[i] for i in rng.permutation(len(pool))], held


def prepare(args: argparse.Namespace) -> None:
    """Split ISIC 2017, score each number of the clinic's cases as a site's job with a real worker and
    record their confirmed diagnoses in ``OUT/site.db``."""
    out = args.out.resolve()
    data_dirs = tuple(args.data or [DEFAULT_DATA / d for d in TRAINING_FOLDERS])
    pool, held = _halves(data_dirs, args.seed)
    counts = [len(pool) if c == "all" else int(c) for c in args.cases.split(",")]
    if any(not 0 < n <= len(pool) for n in counts):
        sys.exit(f"--cases: each between 1 and {len(pool)} (the clinic's half)")
    out.mkdir(parents=True, exist_ok=True)
    (out / HOLDOUT_FILE).write_text(
        json.dumps({"seed": args.seed, "pool": [str(s.path) for s in pool], "held_out": [str(s.path) for s in held]})
    )
    database = out / "site.db"
    database.unlink(missing_ok=True)
    folders = {}
    for n in counts:
        folder = out / f"site-{'all' if n == len(pool) else n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for s in pool[:n]:
            shutil.copyfile(s.path, folder / s.path.name)
        folders[folder.name.replace("site-", "isic2017-")] = folder
    # A diagnosis belongs to the image's content, so one row per image confirms it in every site's job.
    reviews = out / "diagnoses.csv"
    with reviews.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_path", "diagnosis", "basis"])
        largest = out / f"site-{'all' if max(counts) == len(pool) else max(counts)}"
        for s in pool[: max(counts)]:
            w.writerow([str(largest / s.path.name), s.label, "histopathology"])
    from sqlalchemy import create_engine

    url = f"sqlite:///{database}"
    redis = Redis(out)
    env = env_for(url, redis.url, [out])
    worker = Worker(env, out / "worker.log", "site-cases")
    try:
        worker.wait_ready()
        engine = create_engine(url)
        for site, folder in folders.items():
            job, seconds = submit_and_wait(env, folder, engine, 0.5, "--site", site, "--name", site)
            print(f"{site}: {len(list(folder.iterdir()))} images scored as job {job} in {seconds:.0f} s", flush=True)
    finally:
        worker.stop()
        redis.stop()
    done = subprocess.run(
        [sys.executable, "-m", "melanoma", "review", "import", str(reviews), "--reviewer", "bench.site_cases"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip())
    if done.returncode:
        sys.exit(done.stderr.strip() or "review import failed")
    print(f"train with MELANOMA_DATABASE_URL={url} MELANOMA_ALLOWED_ROOTS={out} --reviews-site " + " | ".join(folders))


def _interval(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"{ci[0]:+.3f} to {ci[1]:+.3f}"


def _change(stage: dict) -> str:
    if "melanoma_auc_change_from_control_mean" not in stage:
        return "n/a"
    ci = stage["melanoma_auc_change_from_control_mean_ci95"]
    return f"{stage['melanoma_auc_change_from_control_mean']:+.3f} ({_interval(ci)})"


def _rate(point: dict, key: str) -> str:
    ci = point.get(f"{key}_ci95")
    return _fmt(point[key]) + ("" if ci is None else f" ({ci[0]:.2f}–{ci[1]:.2f})")


def evaluate_versions(args: argparse.Namespace) -> None:
    """Score the held-out half with every version given and write the table, JSON and plot."""
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    out = args.out.resolve()
    chosen = json.loads((out / HOLDOUT_FILE).read_text())
    data_dirs = tuple(args.data or [DEFAULT_DATA / d for d in TRAINING_FOLDERS])
    kept, _ = data.read_clean(data_dirs)
    rest, external = separate_sources(kept, {SOURCE})
    wanted = set(chosen["held_out"])
    held = _Images([s for s in external if str(s.path) in wanted], "held-out half", copies=False)
    if len(held.y) != len(wanted):
        sys.exit(f"{len(wanted) - len(held.y)} of the held-out images are not among --data: pass prepare's folders")
    base = args.versions[0].resolve()
    base_test = set(json.loads((base / SPLIT_FILE).read_text())["test"])
    ham = _Images(
        [s for s in rest if s.image_id in base_test and s.source == "ham10000" and s.label == "nevus"],
        "HAM10000 test nevi",
        copies=False,
    )
    pooled = set(chosen["pool"])
    pool = _Images([s for s in external if str(s.path) in pooled], "the clinic's confirmed cases", copies=False)
    # A stage with --reviews-site names a confirmed case by its content key (that of its copy in a site folder).
    pool_ids = [files.sha256(Path(path).read_bytes()) for path, _, _ in pool.files]
    probs: dict[str, np.ndarray] = {}
    rows: dict[str, dict] = {}
    images = {"held": held, "ham": ham, "pool": pool}
    lists = {name: [path for path, _, _ in imgs.files] for name, imgs in images.items()}
    for i, folder in enumerate(args.versions):
        folder = folder.resolve()
        registry, version = Registry(folder.parent), folder.name
        meta = registry.meta(version)
        got, reused = scores.cached(
            out / "scores",
            folder,
            meta.temperature,
            lists,
            functools.partial(scores.probabilities, registry, version, meta.temperature, images),
            rescore=args.rescore,
        )
        p, ham_p, p_pool = got["held"], got["ham"], got["pool"]
        m = evaluate.metrics(held.y, p, meta.melanoma_threshold, meta.decision_weights)
        info = meta.data
        cases = info.get("review_cases", 0)
        role = "base" if i == 0 else "control" if not cases else "site"
        row = _summary(m) | {
            "role": role,
            "version": version,
            "seed": meta.seed,
            "epochs": _epochs(folder),
            "site_cases": cases,
            "site_cases_trained": info.get("source_counts", {}).get("train", {}).get(_site_source(info), {}),
            "median_p_melanoma_ham10000_test_nevi": float(np.median(ham_p[:, MELANOMA])),
            "mean_p_melanoma": float(p[:, MELANOMA].mean()),
        }
        train_ids = set(json.loads((folder / SPLIT_FILE).read_text())["train"])
        unseen = np.array([sha not in train_ids for sha in pool_ids])
        row |= operating_points(held.y, p, meta.melanoma_threshold, pool.y[unseen], p_pool[unseen])
        probs[version] = p
        rows[version] = row
        shown = ("site_cases", "melanoma_auc", "seborrheic_keratosis_auc")
        print(role, version, {k: row[k] for k in shown}, "(kept scores)" if reused else "", flush=True)
    base_version = args.versions[0].resolve().name
    controls = pair_controls(rows)
    for version, row in rows.items():
        refs = {"base": base_version} | ({"control": controls[version]} if version in controls else {})
        for ref, of in refs.items():
            if of != version:
                row[f"melanoma_auc_change_from_{ref}_ci95"] = clinic.auc_difference_interval(
                    held.y == MELANOMA, probs[version][:, MELANOMA], probs[of][:, MELANOMA]
                )
                row[f"{ref}_version"] = of
    counts = {label: int((held.y == i).sum()) for i, label in enumerate(CLASS_NAMES) if (held.y == i).any()}
    lines = [
        "# A new clinic's confirmed cases: the left-out version continued on ISIC 2017 cases",
        "",
        f"Held-out half of ISIC 2017 ({len(held.y)} images: "
        + ", ".join(f"{n} {label}" for label, n in counts.items())
        + "), never trained on. Site cases: confirmed diagnoses recorded for that many images of the "
        "other half (a stage with `--reviews-site` splits them by image like any source: about 70 % train). "
        "nevi P(mel): median P(melanoma) of the half's nevi, against the HAM10000 test nevi of the base "
        "version's split. Melanoma AUC changes with paired bootstrap 95 % intervals; a site version's "
        "control is the same stage without site cases, same seed and epochs (`pair_controls`).",
        "",
        "| version | site cases (trained on) | "
        + " | ".join(label for _, label in COLUMNS)
        + " | HAM10000 nevi P(mel) | mel AUC change from base | from control |",
        "|---|---|" + "---|" * len(COLUMNS) + "---|---|---|",
    ]
    for version, row in rows.items():
        trained = _trained(row)
        lines.append(
            f"| {row['role']} `{version[-4:]}` (seed {row['seed']}, {row['epochs']} epochs) | "
            f"{row['site_cases']} ({trained}) | "
            + " | ".join(_fmt(row[key]) for key, _ in COLUMNS)
            + f" | {_fmt(row['median_p_melanoma_ham10000_test_nevi'])}"
            + f" | {_interval(row.get('melanoma_auc_change_from_base_ci95'))}"
            + f" | {_interval(row.get('melanoma_auc_change_from_control_ci95'))} |"
        )
    stages = stage_means(rows, held.y == MELANOMA, probs)
    lines += [
        "",
        "## Each stage over its runs",
        "",
        "Runs of one stage differ on an unseen source, so the curve is read off their means. The mean "
        "change from control is the mean of the runs' changes from their own controls, with one paired "
        "bootstrap 95 % interval over the half's images (each resample scores every run and control): "
        "whether the stage helps on average for these runs. Over runs: the Student-t 95 % interval of "
        "that mean with the runs as draws and the images fixed (wide with few runs): whether another "
        "draw of the stage would be expected to gain. Runs above their control: how many runs' own "
        "interval lies wholly above zero, whether every run of it did.",
        "",
        "| epochs | site cases (trained on) | runs | mel AUC mean (range) | SK AUC mean "
        "| mean change from control | over runs | runs above their control |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for st in stages:
        low, high = st["melanoma_auc_range"]
        above = "n/a" if st["runs_above_control"] is None else f"{st['runs_above_control']} of {st['runs']}"
        lines.append(
            f"| {st['epochs']} | {st['site_cases']} ({st['trained']}) | {st['runs']} "
            f"| {_fmt(st['melanoma_auc_mean'])} ({_fmt(low)}–{_fmt(high)}) "
            f"| {_fmt(st['seborrheic_keratosis_auc_mean'])} | {_change(st)} "
            f"| {_interval(st.get('melanoma_auc_change_from_control_runs_ci95'))} | {above} |"
        )
    share = counts.get("melanoma", 0) / len(held.y)
    lines += [
        "",
        "## Operating points on the held-out half",
        "",
        "At the version's own threshold (set on its validation split) and at the site threshold "
        "`melanoma threshold set --site --sensitivity 0.85` would store from the clinic's confirmed cases "
        "the version did not train on (all of the clinic's half for the base and the controls, the site "
        "stage's validation and test cases for the others). 95 % intervals in brackets: Wilson's at the "
        "own threshold; at the site threshold a bootstrap over the cases it is fitted on and the half. "
        f"Mean P(mel) against the half's melanoma share {share:.3f}.",
        "",
        "| version | own threshold | sensitivity | specificity | site threshold (cases, melanomas) "
        "| sensitivity | specificity | mean P(mel) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for version, row in rows.items():
        own, site = row["own_threshold"], row["site_threshold"]
        lines.append(
            f"| {row['role']} `{version[-4:]}` | {_fmt(own['threshold'])} | {_rate(own, 'sensitivity')} "
            f"| {_rate(own, 'specificity')} | {_fmt(site['threshold'])} ({site['cases']}, {site['melanomas']}) "
            f"| {_rate(site, 'sensitivity')} | {_rate(site, 'specificity')} | {_fmt(row['mean_p_melanoma'])} |"
        )
    (out / "site_cases.json").write_text(json.dumps({"held_out": counts, "versions": rows, "stages": stages}, indent=1))
    (out / "site_cases.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "site_cases.png")
    print("\n".join(lines))


def operating_points(
    y: np.ndarray,
    p: np.ndarray,
    own: float | None,
    case_y: np.ndarray,
    case_p: np.ndarray,
    sensitivity: float = 0.85,
    seed: int = 0,
) -> dict:
    """Melanoma sensitivity and specificity on the held-out half (``y``, ``p``) at the version's own
    threshold and at the site threshold ``melanoma threshold set --site`` would store: the one that
    flags ``sensitivity`` of the melanomas among the clinic's confirmed cases the version did not train
    on (``case_y``, ``case_p``).

    Each with a 95 % interval: Wilson's at the own threshold, which the version fixes; at the site
    threshold a bootstrap that resamples the cases it is fitted on as well as the half, since a clinic
    with few confirmed melanomas gets a threshold that varies with which ones it has."""
    is_mel, case_mel = y == MELANOMA, case_y == MELANOMA
    mel_scores = case_p[case_mel, MELANOMA]
    site = evaluate.threshold_for_sensitivity(mel_scores, sensitivity)

    def rates(threshold: float | None) -> dict:
        if threshold is None:
            return dict.fromkeys(("threshold", "sensitivity", "specificity", "sensitivity_ci95", "specificity_ci95"))
        flagged = p[:, MELANOMA] >= threshold
        sens, spec = evaluate.melanoma_rates(flagged, is_mel)
        return {
            "threshold": threshold,
            "sensitivity": sens,
            "specificity": spec,
            "sensitivity_ci95": clinic.wilson(int((flagged & is_mel).sum()), int(is_mel.sum())),
            "specificity_ci95": clinic.wilson(int((~flagged & ~is_mel).sum()), int((~is_mel).sum())),
        }

    site_point = rates(site) | {"cases": int(len(case_y)), "melanomas": int(case_mel.sum())}
    if site is not None:  # the half's Wilson intervals give way to ones that cover the threshold's fit too
        rng = np.random.default_rng(seed)
        drawn = np.full((clinic.BOOTSTRAP, 2), np.nan)
        for b in range(clinic.BOOTSTRAP):
            t = evaluate.threshold_for_sensitivity(
                mel_scores[rng.integers(0, len(mel_scores), len(mel_scores))], sensitivity
            )
            idx = rng.integers(0, len(y), len(y))
            drawn[b] = [np.nan if r is None else r for r in evaluate.melanoma_rates(p[idx, MELANOMA] >= t, is_mel[idx])]
        site_point |= {
            "sensitivity_ci95": clinic.percentile_interval(drawn[:, 0]),
            "specificity_ci95": clinic.percentile_interval(drawn[:, 1]),
        }
    return {"own_threshold": rates(own), "site_threshold": site_point}


def pair_controls(rows: dict[str, dict]) -> dict[str, str]:
    """Each site version's control: the control with its seed and epochs, else its epochs, else its
    seed, else the first control (rows hold ``role``, ``seed`` and ``epochs``; none without controls).

    The stage's length and its draws both move the held-out figures (two runs of one four-epoch stage
    differ by 0.04), so a site version is compared with the stage that differs from it in the cases alone.
    """
    controls = {v: r for v, r in rows.items() if r["role"] == "control"}
    paired: dict[str, str] = {}
    for version, row in rows.items():
        if row["role"] != "site" or not controls:
            continue
        for same in (("seed", "epochs"), ("epochs",), ("seed",), ()):
            match = [v for v, c in controls.items() if all(c[k] == row[k] for k in same)]
            if match:
                paired[version] = match[0]
                break
    return paired


def stage_means(
    rows: dict[str, dict], positive: np.ndarray | None = None, probs: dict[str, np.ndarray] | None = None
) -> list[dict]:
    """One entry per stage (controls and site versions of one length and number of site cases) over
    its runs: the runs, mean and range of the melanoma AUC, mean SK AUC, and how many runs' paired
    interval against their control lies wholly above zero (``melanoma_auc_change_from_control_ci95``).
    Given the half's melanoma labels (``positive``) and each version's P(melanoma) (``probs``), a site
    stage also gets its runs' mean change from their controls with one paired interval over them
    (``clinic.mean_auc_difference_interval``); a site stage of two or more paired runs gets the
    run-to-run interval of that mean (``runs_interval``).

    Runs of one stage differ on an unseen source by up to 0.04, so the curve is read off these means;
    the mean change's interval says whether the stage helps on average, the run count whether every
    run of it did."""
    stages: dict[tuple[int, int], list[dict]] = {}
    for row in rows.values():
        if row["role"] != "base":
            stages.setdefault((row["epochs"] or 0, row["site_cases"]), []).append(row)
    out = []
    for (epochs, cases), runs in sorted(stages.items()):
        auc = [r["melanoma_auc"] for r in runs]
        changes = [r.get("melanoma_auc_change_from_control_ci95") for r in runs]
        out.append(
            {
                "epochs": epochs,
                "site_cases": cases,
                "trained": round(float(np.mean([_trained(r) for r in runs]))),
                "runs": len(runs),
                "melanoma_auc_mean": float(np.mean(auc)),
                "melanoma_auc_range": (min(auc), max(auc)),
                "seborrheic_keratosis_auc_mean": _mean([r["seborrheic_keratosis_auc"] for r in runs]),
                "runs_above_control": None if cases == 0 else sum(c is not None and c[0] > 0 for c in changes),
            }
        )
        pairs = [(r["version"], r["control_version"]) for r in runs if "control_version" in r]
        auc_changes = [rows[v]["melanoma_auc"] - rows[c]["melanoma_auc"] for v, c in pairs]
        if cases and len(pairs) > 1:
            out[-1]["melanoma_auc_change_from_control_runs_ci95"] = runs_interval(auc_changes)
        if cases and pairs and positive is not None and probs is not None:
            scored = [(probs[v][:, MELANOMA], probs[c][:, MELANOMA]) for v, c in pairs]
            out[-1] |= {
                "melanoma_auc_change_from_control_mean": float(np.mean(auc_changes)),
                "melanoma_auc_change_from_control_mean_ci95": clinic.mean_auc_difference_interval(positive, scored),
            }
    return out


def runs_interval(changes: list[float]) -> tuple[float, float] | None:
    """Student-t 95 % interval of the mean of runs' changes (None below two runs).

    The pooled bootstrap resamples the images with the runs fixed; this treats the runs as draws of
    the stage with the images fixed: whether another seed would be expected to gain as well."""
    if len(changes) < 2:
        return None
    from scipy import stats

    ci = stats.ttest_1samp(changes, 0.0).confidence_interval(0.95)
    return float(ci.low), float(ci.high)


def plot(rows: dict[str, dict], path: Path) -> None:
    """Write ``draw``'s figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw(ax, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(ax: Any, rows: dict[str, dict]) -> None:
    """Held-out melanoma and SK AUC against the site cases trained on (the control at 0), each run a
    point, a line through each stage's mean (``stage_means``) for each stage length; the base version
    and the targets as lines."""
    runs = [r for r in rows.values() if r["role"] != "base"]
    base = next(r for r in rows.values() if r["role"] == "base")
    x = np.array([_trained(r) for r in runs], float)
    epochs = np.array([r["epochs"] or 0 for r in runs])
    stages = stage_means(rows)
    for key, label, target, colour in (
        ("melanoma_auc", "melanoma AUC", 0.80, "tab:blue"),
        ("seborrheic_keratosis_auc", "seborrheic keratosis AUC", 0.85, "tab:green"),
    ):
        if base[key] is None:
            continue  # the half holds none of the class: no AUC for any version
        y = np.array([r[key] for r in runs], float)
        # Four- and eight-epoch stages differ without any cases: one line for each length.
        for n, (style, marker) in zip(sorted(set(epochs)), (("-", "o"), ("--", "s"), (":", "^")), strict=False):
            at = epochs == n
            line = [st for st in stages if st["epochs"] == n]
            ax.plot(
                [st["trained"] for st in line],
                [st[f"{key}_mean"] for st in line],
                style,
                color=colour,
                marker=marker,
                label=f"{label}, {n} epochs (held-out half)",
            )
            ax.plot(x[at], y[at], marker, color=colour)
        ax.axhline(base[key], color=colour, ls=":", lw=1, label=f"{label}, left-out version as it was")
        ax.axhline(target, color=colour, ls="-.", lw=0.8, label=f"target {target:.2f}")
    ax.set_xlabel("the clinic's confirmed cases trained on (0: the same stage without any)")
    ax.set_ylabel("ROC AUC on the clinic's other images")
    ax.set_title("A new clinic's confirmed cases (ISIC 2017 as the clinic; one point per run)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def _mean(values: list[float | None]) -> float | None:
    """The mean, or None where a value is (an AUC of a class the held-out half does not hold)."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if len(known) == len(values) else None


def _trained(row: dict) -> int:
    """The site cases a version's stage trained on (0 for the base and the controls)."""
    return sum(row["site_cases_trained"].values())


def _epochs(folder: Path) -> int | None:
    """The epochs a version's stage trained (its history), None for a version without one."""
    history = folder / "history.json"
    return len(json.loads(history.read_text()).get("loss", [])) if history.is_file() else None


def _site_source(info: dict) -> str:
    return next((s for s in info.get("sources", []) if s.startswith("reviews-")), "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="split ISIC 2017, score the clinic's folders, record their diagnoses")
    p.add_argument("--cases", default="100,300,all", help="numbers of confirmed cases, `,`-separated (nested)")
    e = sub.add_parser("evaluate", help="score the held-out half with BASE and the versions continued from it")
    e.add_argument("versions", type=Path, nargs="+", help="version folders: BASE (left out), then others")
    for s in (p, e):
        s.add_argument("--data", type=Path, action="append", help="training folders (default: ../shared/data's five)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", type=Path, default=Path("runs/site-cases"))
    e.add_argument(
        "--rescore",
        action="store_true",
        help="score every version again instead of using the scores kept in OUT/scores",
    )
    args = ap.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
    elif len(args.versions) < 2:
        sys.exit("evaluate needs BASE and at least one version continued from it")
    else:
        evaluate_versions(args)


if __name__ == "__main__":
    main()
