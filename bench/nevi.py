"""Nevi by source and by how they were confirmed: is a source's higher P(melanoma) for its nevi the
device, or which nevi the source holds? And how well melanomas are told from each kind of nevus.

Issue #24 asks that ISIC 2017's nevi get no higher median P(melanoma) than HAM10000's. HAM10000 says
how each nevus was confirmed (``dx_type``): by histopathology (it was excised, so it looked suspicious
enough to cut), by follow-up (it was watched and did not change) or by consensus. This bench scores
each version's own unseen nevi (its test split, and every image of a source it left out) and gives,
per source and per HAM10000 confirmation, the median P(melanoma) with a bootstrap 95 % interval, the
share flagged at the version's threshold (Wilson interval) and the AUC with which P(melanoma) tells
ISIC 2017's nevi from each HAM10000 kind (0.5: alike); and each source's melanoma AUC against its
own nevi, for HAM10000 against each kind (the excised nevi are the hard negatives).

    python -m bench.nevi models/pretrained-…-596d runs/pretrained-lite1-loso-2/pretrained-… \
        [--data DIR ...] [--out docs/bench] [--scores runs/scores] [--rescore]

Writes ``nevi.md``, ``nevi.json`` and ``nevi.png`` to ``--out``; each version's probabilities are kept
under ``--scores`` (:mod:`bench.scores`; outside the repository's tracked files by default).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import scores
from bench.common import DEFAULT_DATA
from bench.ensemble import TRAINING_FOLDERS, _Images
from melanoma.ml import clinic, data, evaluate
from melanoma.ml.clinic import MELANOMA
from melanoma.versions.registry import SPLIT_FILE, Registry

HAM = "ham10000"
ISIC2017 = "isic2017"


def kind_of(sample: data.Sample) -> str | None:
    """How a HAM10000 nevus was confirmed (its metadata's ``dx_type``, ``unknown`` when it does not
    say); None for another source's."""
    return (sample.confirmed_by or "unknown") if sample.source == HAM else None


def group_of(sample: data.Sample) -> str:
    """The row a nevus belongs to: its source, and for HAM10000 also how it was confirmed."""
    kind = kind_of(sample)
    return f"{sample.source} ({kind})" if kind else sample.source


def unseen(kept: list[data.Sample], split: dict[str, list[str]], label: str = "nevus") -> list[data.Sample]:
    """The images of ``label`` a version never trained or validated on: its test split and its
    left-out images."""
    ids = set(split.get("test", [])) | set(split.get("external", []))
    return [s for s in kept if s.label == label and s.image_id in ids]


def median_interval(p: np.ndarray) -> tuple[float, float] | None:
    """Bootstrap 95 % interval of the median of ``p``."""
    return clinic.bootstrap_interval(lambda idx: float(np.median(p[idx])), len(p)) if len(p) else None


def summarise(groups: list[str], p_mel: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Per group: count, median P(melanoma) with its interval, share flagged at ``threshold``; and the
    AUC with which P(melanoma) tells ISIC 2017's nevi from each HAM10000 kind."""
    names = np.asarray(groups)
    members = {name: names == name for name in sorted(set(groups))}
    if any(name.startswith(HAM) for name in members):  # the issue's comparison: HAM10000's nevi pooled
        members[f"{HAM} (all)"] = np.char.startswith(names.astype(str), HAM)
    rows: dict[str, dict[str, Any]] = {}
    for name, mask in sorted(members.items()):
        p = p_mel[mask]
        flagged = int(np.sum(p >= threshold)) if threshold is not None else None
        rows[name] = {
            "nevi": len(p),
            "median_p_melanoma": float(np.median(p)),
            "median_ci95": median_interval(p),
            "flagged": flagged,
            "flagged_share": flagged / len(p) if flagged is not None else None,
            "flagged_ci95": clinic.wilson(flagged, len(p)) if flagged is not None else None,
        }
    isic = p_mel[names == ISIC2017]
    against: dict[str, float | None] = {}
    for name in rows:
        if name.startswith(HAM) and len(isic):
            against[name] = evaluate.roc_auc(*_ranked(isic, p_mel[members[name]]))
    return {"groups": rows, "isic2017_against": against}


def _ranked(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels and scores of one AUC: ``positive``'s scores against ``negative``'s."""
    return np.r_[np.ones(len(positive), bool), np.zeros(len(negative), bool)], np.r_[positive, negative]


def melanoma_aucs(
    melanomas: list[str], p_mel: np.ndarray, nevi: list[tuple[str, str | None]], p_nev: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Melanoma AUC of each source's unseen melanomas against its own nevi, and for HAM10000 against
    each kind of its nevi (how hard the negatives are), with bootstrap 95 % intervals.
    ``melanomas``: each melanoma's source; ``nevi``: each nevus's source and kind (:func:`kind_of`)."""
    mel_src = np.asarray(melanomas, dtype=str)
    nev_src = np.asarray([source for source, _ in nevi], dtype=str)
    nev_kind = np.asarray([kind or "" for _, kind in nevi], dtype=str)
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(set(melanomas)):
        pos = p_mel[mel_src == source]
        kinds = {f"{source}: all nevi": nev_src == source}
        if source == HAM:
            for kind in sorted({k for s, k in nevi if s == HAM and k}):
                kinds[f"{HAM}: {kind} nevi"] = (nev_src == HAM) & (nev_kind == kind)
        for name, mask in kinds.items():
            neg = p_nev[mask]
            if not len(pos) or not len(neg):
                continue
            y, score = _ranked(pos, neg)
            out[name] = {
                "melanomas": len(pos),
                "nevi": len(neg),
                "auc": evaluate.roc_auc(y, score),
                "ci95": clinic.bootstrap_auc(y, score),
            }
    return out


def measure(folder: Path, kept: list[data.Sample], cache: Path, rescore: bool) -> dict:
    """One version's figures on its unseen nevi and melanomas."""
    registry, version = Registry(folder.parent), folder.name
    meta = registry.meta(version)
    split = json.loads((folder / SPLIT_FILE).read_text())
    nevi, melanomas = unseen(kept, split), unseen(kept, split, "melanoma")
    images = {"nevi": _Images(nevi, "nevi", copies=False), "melanomas": _Images(melanomas, "melanomas", copies=False)}
    lists = {name: [path for path, _, _ in imgs.files] for name, imgs in images.items()}
    got, reused = scores.cached(
        cache,
        folder,
        meta.temperature,
        lists,
        functools.partial(scores.probabilities, registry, version, meta.temperature, images),
        rescore=rescore,
    )
    print(f"{version}: {len(nevi)} unseen nevi, {len(melanomas)} melanomas" + (" (kept scores)" if reused else ""))
    external = set(split.get("external", []))
    left_out = sorted({s.source for s in nevi + melanomas if s.image_id in external})
    groups = [group_of(s) for s in nevi]
    p_nev, p_mel = got["nevi"][:, MELANOMA], got["melanomas"][:, MELANOMA]
    summary = summarise(groups, p_nev, meta.melanoma_threshold)
    aucs = melanoma_aucs([s.source for s in melanomas], p_mel, [(s.source, kind_of(s)) for s in nevi], p_nev)
    return (
        {"version": version, "left_out": left_out, "threshold": meta.melanoma_threshold}
        | summary
        | {"melanoma_auc": aucs}
    )


def _ci(ci: Any) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


def table(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        seen = f"left out: {', '.join(r['left_out'])}" if r["left_out"] else "every source trained on"
        lines += [
            f"### {r['version']} ({seen}; threshold {r['threshold']:.3f})",
            "",
            "| nevi | count | median P(melanoma) (95 %) | flagged (95 %) | AUC ISIC 2017 nevi above these |",
            "|---|---:|---|---|---:|",
        ]
        for name, g in r["groups"].items():
            auc = r["isic2017_against"].get(name)
            share = g["flagged_share"]
            flagged = f"{share:.3f} ({_ci(g['flagged_ci95'])})" if share is not None else "–"
            lines.append(
                f"| {name} | {g['nevi']} | {g['median_p_melanoma']:.3f} ({_ci(g['median_ci95'])}) | {flagged} | "
                + (f"{auc:.3f}" if auc is not None else "")
                + " |"
            )
        lines += [
            "",
            "| melanoma AUC: unseen melanomas against | melanomas | nevi | AUC (95 %) |",
            "|---|---:|---:|---|",
        ]
        for name, a in r["melanoma_auc"].items():
            auc = f"{a['auc']:.3f} ({_ci(a['ci95'])})" if a["auc"] is not None else "–"
            lines.append(f"| {name} | {a['melanomas']} | {a['nevi']} | {auc} |")
        lines.append("")
    return lines


def plot(results: list[dict], path: Path) -> None:
    """Median P(melanoma) of each version's nevi per group, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for r in results for n in r["groups"]})
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(names) * len(results)))
    y = 0.0
    ticks, labels = [], []
    for name in names:
        for i, r in enumerate(results):
            g = r["groups"].get(name)
            if g is None:
                continue
            lo, hi = g["median_ci95"] or (g["median_p_melanoma"],) * 2
            m = g["median_p_melanoma"]
            ax.errorbar(m, y, xerr=[[m - lo], [hi - m]], fmt="o", color=f"C{i}", label=r["version"])
            ticks.append(y)
            labels.append(f"{name} ({g['nevi']})")
            y += 1
        y += 0.5
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median P(melanoma) of the nevi (95 % bootstrap interval)")
    handles, texts = ax.get_legend_handles_labels()
    unique = dict(zip(texts, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("versions", nargs="+", type=Path, help="version folders (each with its split.json)")
    ap.add_argument("--data", type=Path, action="append", help="the folders the versions trained from")
    ap.add_argument("--out", type=Path, default=Path("docs/bench"))
    ap.add_argument("--scores", type=Path, default=Path("runs/scores"), help="where versions' probabilities are kept")
    ap.add_argument("--rescore", action="store_true", help="score again, whatever the kept scores")
    args = ap.parse_args(argv)
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    data_dirs = tuple(args.data or [DEFAULT_DATA / d for d in TRAINING_FOLDERS])
    kept, _ = data.read_clean(data_dirs)
    out = args.out.resolve()
    cache = args.scores.resolve()
    results = [measure(folder.resolve(), kept, cache, args.rescore) for folder in args.versions]
    lines = ["# Unseen nevi by source and by how HAM10000 confirmed them (`python -m bench.nevi`)", ""]
    lines += table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nevi.md").write_text("\n".join(lines))
    (out / "nevi.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "nevi.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
