"""An ensemble of trained versions against each of them, on images none of them trained on.

Each member is a published version folder (``metadata.json``, ``model.keras``, ``split.json``),
e.g. leave-one-source-out runs of the same recipe with different seeds. Every member scores:

* the left-out source(s): the ``external`` images of each member's split (the same for members
  that left out the same source);
* the test images of every member's split at once (the intersection of their ``test`` lists), so
  that no member saw any of them in training or validation, per source.

The ensemble averages the members' calibrated probabilities (each at its own temperature). It
costs as many model calls per image as it has members.

    python -m bench.ensemble VERSION_FOLDER VERSION_FOLDER [...] [--data DIR ...] [--out runs/bench-ensemble]

Writes ``ensemble.json`` and ``ensemble.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import DEFAULT_DATA
from melanoma.ml import assess, data, evaluate
from melanoma.ml.splits import separate_sources
from melanoma.versions.registry import SPLIT_FILE, Registry

TRAINING_FOLDERS = ("isic-9class/Train", "ham10000", "ham10000-extra", "isic2017", "isic-fullres")
COLUMNS = (
    ("melanoma_auc", "mel AUC"),
    ("seborrheic_keratosis_auc", "SK AUC"),
    ("keratosis_auc", "SK+BKL AUC"),
    ("balanced_accuracy", "bal acc"),
    ("median_p_melanoma_nevi", "nevi P(mel)"),
    ("ece", "ECE"),
)


def _summary(m: dict) -> dict:
    return {key: m.get(key) for key, _ in COLUMNS} | {"n": m["n"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", type=Path, nargs="+", help="version folders (two or more)")
    ap.add_argument(
        "--data",
        type=Path,
        action="append",
        help="the members' training folders (repeat; default: the five of ../shared/data, as in the README)",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench-ensemble"))
    args = ap.parse_args(argv)
    if len(args.versions) < 2:
        sys.exit("an ensemble needs two or more version folders")
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    members = [(Registry(v.resolve().parent), v.resolve().name) for v in args.versions]
    splits = [json.loads((r.path(v) / SPLIT_FILE).read_text()) for r, v in members]
    excluded = {tuple(sorted(r.meta(v).data.get("excluded_sources", []))) for r, v in members}
    if len(excluded) != 1:
        sys.exit(f"the members left out different sources: {sorted(excluded)}")
    (left_out,) = excluded
    test_ids = set.intersection(*(set(s["test"]) for s in splits))
    seen = set().union(*(set(s["train"]) | set(s["val"]) for s in splits))
    test_ids -= seen  # the intersection already excludes them; kept explicit, as it is the point
    external_ids = set.intersection(*(set(s.get("external", [])) for s in splits))

    kept, _ = data.read_clean(tuple(args.data or [DEFAULT_DATA / d for d in TRAINING_FOLDERS]))
    rest, external = separate_sources(kept, set(left_out))
    sides = {
        "external": [s for s in external if s.image_id in external_ids],
        "test": [s for s in rest if s.image_id in test_ids],
    }
    result: dict = {"members": [v for _, v in members], "excluded_sources": list(left_out), "sides": {}}
    for side, samples in sides.items():
        if not samples:
            continue
        probs_by_member: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        rows: dict[str, dict] = {}
        for registry, version in members:
            meta = registry.meta(version)
            metrics, arrays = assess.evaluate_sources(
                registry.load(version), samples, meta.temperature, None, f"{side} {version}"
            )
            probs_by_member.append(arrays)
            rows[version] = {src: _summary(m) for src, m in metrics.items()}
        ensemble: dict[str, dict] = {}
        for src in probs_by_member[0]:
            y = probs_by_member[0][src][0]
            mean = np.mean([arrays[src][1] for arrays in probs_by_member], axis=0)
            ensemble[src] = _summary(evaluate.metrics(y, mean))
        rows["ensemble"] = ensemble
        result["sides"][side] = rows

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ensemble.json").write_text(json.dumps(result, indent=1))
    lines = [f"members: {', '.join(result['members'])}; left out: {', '.join(result['excluded_sources']) or '-'}"]
    for side, rows in result["sides"].items():
        first = next(iter(rows.values()))
        for src in first:
            n = first[src]["n"]
            lines += ["", f"{side} / {src} ({n} images)", f"{'':<32}" + "".join(f"{t:>12}" for _, t in COLUMNS)]
            for name, by_src in rows.items():
                m = by_src[src]
                cells = "".join(f"{m[k]:>12.3f}" if m[k] is not None else f"{'-':>12}" for k, _ in COLUMNS)
                lines.append(f"{name:<32}{cells}")
    text = "\n".join(lines)
    (args.out / "ensemble.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
