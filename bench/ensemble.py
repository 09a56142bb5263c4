"""An ensemble of trained versions, and optionally their weight average, against each member, on
images none of them trained on.

Each member is a published version folder (``metadata.json``, ``model.keras``, ``split.json``),
e.g. runs of one recipe with different seeds. Every member scores:

* the left-out source(s): the ``external`` images of each member's split (the same for members
  that left out the same source);
* the test images of every member's split at once (the intersection of their ``test`` lists), so
  that no member saw any of them in training or validation: per source (each source from its own
  copy of an image) and over all of them (each image once, from the file training kept, as the model
  cards count it), with each one's melanoma AUC against the first member's (paired bootstrap 95 %
  interval of the difference on those images).

The ensemble averages the members' calibrated probabilities (each at its own temperature); it costs
as many model calls per image as it has members. ``--soup`` also scores the members' weight average
(a "model soup", Wortsman et al. 2022: one model call per image; members fine-tuned from one parent
with the same input size), at a temperature fitted on the validation images all members share.

``--val`` adds the validation images the members share (what a choice among ensembles may look at:
the published ensemble is calibrated and gated on them); ``--subsets`` every smaller ensemble that
includes the first member.

    python -m bench.ensemble VERSION_FOLDER VERSION_FOLDER [...] [--soup] [--val] [--subsets] [--data DIR ...]
        [--out runs/bench-ensemble]

Writes ``ensemble.json`` and ``ensemble.txt``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DEFAULT_DATA
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import assess, clinic, data, evaluate
from melanoma.ml.splits import separate_sources
from melanoma.versions.registry import SPLIT_FILE, Registry

TRAINING_FOLDERS = ("isic-9class/Train", "ham10000", "ham10000-extra", "isic2017", "isic-fullres")
ALL = "all (each image once)"
MELANOMA = CLASS_NAMES.index("melanoma")
COLUMNS = (
    ("melanoma_auc", "mel AUC"),
    ("seborrheic_keratosis_auc", "SK AUC"),
    ("keratosis_auc", "SK+BKL AUC"),
    ("melanoma_specificity_at_85_sensitivity", "spec@85"),
    ("balanced_accuracy", "bal acc"),
    ("median_p_melanoma_nevi", "nevi P(mel)"),
    ("ece", "ECE"),
)


def _summary(m: dict) -> dict:
    return {key: m.get(key) for key, _ in COLUMNS} | {"n": m["n"]}


class _Images:
    """The files of one side decoded once per input size: each image (the file training kept) and,
    with ``copies``, every other source's copy of it; ``groups`` gives the rows of each source and of
    every image once."""

    def __init__(self, samples: list[data.Sample], desc: str, copies: bool = True) -> None:
        self.files = [(s.path, s.source, s.label_index) for s in samples]
        if copies:
            self.files += [(p, src, s.label_index) for s in samples for p, src in s.copies]
        self.y = np.array([label for _, _, label in self.files], dtype=np.int32)
        sources = np.array([src for _, src, _ in self.files])
        self.groups = {src: np.flatnonzero(sources == src) for src in sorted(set(sources))}
        self.groups[ALL] = np.arange(len(samples))
        self.desc = desc
        self._decoded: dict[tuple[int, int], np.ndarray] = {}

    def x(self, size: tuple[int, int]) -> np.ndarray:
        if size not in self._decoded:
            paths = [p for p, _, _ in self.files]
            self._decoded[size] = data.load_arrays(paths, list(self.y), self.desc, size)[0]
        return self._decoded[size]


def _soup(models: list[Any]) -> Any:
    """The first member with every weight replaced by the members' mean."""
    import keras

    weights = [m.get_weights() for m in models]
    if any(len(w) != len(weights[0]) or any(a.shape != b.shape for a, b in zip(w, weights[0])) for w in weights):
        sys.exit("--soup needs members of one architecture and input size")
    soup = keras.models.clone_model(models[0])
    soup.set_weights([np.mean(ws, axis=0).astype(ws[0].dtype) for ws in zip(*weights)])
    return soup


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", type=Path, nargs="+", help="version folders (two or more)")
    ap.add_argument(
        "--data",
        type=Path,
        action="append",
        help="the members' training folders (repeat; default: the five of ../shared/data, as in the README)",
    )
    ap.add_argument("--soup", action="store_true", help="also score the members' weight average")
    ap.add_argument(
        "--val",
        action="store_true",
        help="also score the validation images all members share (none trained on): what a choice "
        "among ensembles may look at, the test split being for reporting only",
    )
    ap.add_argument(
        "--subsets",
        action="store_true",
        help="also score every ensemble of two or more members that includes the first",
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
        "external": _Images([s for s in external if s.image_id in external_ids], "external"),
        "test": _Images([s for s in rest if s.image_id in test_ids], "test"),
    }
    if args.val:
        trained = set().union(*(set(s["train"]) for s in splits))
        val_ids = set.intersection(*(set(s["val"]) for s in splits)) - trained
        sides = {"val": _Images([s for s in rest if s.image_id in val_ids], "validation"), **sides}
    models = {version: registry.load(version) for registry, version in members}
    temperatures = {version: registry.meta(version).temperature for registry, version in members}
    if args.soup:
        val_ids = set.intersection(*(set(s["val"]) for s in splits))
        val = _Images([s for s in rest if s.image_id in val_ids], "validation", copies=False)
        soup = _soup(list(models.values()))
        logits = assess.predict_logits(soup, val.x(assess.input_size(soup)))
        temperatures["soup"] = evaluate.fit_temperature(logits, val.y)
        models["soup"] = soup
    names = [v for _, v in members]
    result: dict = {"members": names, "excluded_sources": list(left_out), "temperatures": temperatures, "sides": {}}
    for side, images in sides.items():
        if not images.files:
            continue
        probs = {
            name: assess.predict_probs(model, images.x(assess.input_size(model)), temperature=temperatures[name])
            for name, model in models.items()
        }
        probs["ensemble"] = np.mean([probs[name] for name in names], axis=0)
        if args.subsets:
            for k in range(2, len(names)):
                for others in itertools.combinations(names[1:], k - 1):
                    subset = (names[0], *others)
                    probs["ensemble of " + " + ".join(n[-4:] for n in subset)] = np.mean(
                        [probs[n] for n in subset], axis=0
                    )
        result["sides"][side] = {
            name: {src: _summary(evaluate.metrics(images.y[idx], p[idx])) for src, idx in images.groups.items()}
            for name, p in probs.items()
        }
        once = images.groups[ALL]
        positive = images.y[once] == MELANOMA
        baseline = probs[names[0]][once, MELANOMA]
        result.setdefault("melanoma_auc_against_first", {})[side] = {
            name: clinic.auc_difference_interval(positive, p[once, MELANOMA], baseline)
            for name, p in probs.items()
            if name != names[0]
        }

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ensemble.json").write_text(json.dumps(result, indent=1))
    lines = [f"members: {', '.join(names)}; left out: {', '.join(result['excluded_sources']) or '-'}"]
    for side, rows in result["sides"].items():
        first = next(iter(rows.values()))
        for src in first:
            n = first[src]["n"]
            lines += ["", f"{side} / {src} ({n} images)", f"{'':<32}" + "".join(f"{t:>12}" for _, t in COLUMNS)]
            for name, by_src in rows.items():
                m = by_src[src]
                cells = "".join(f"{m[k]:>12.3f}" if m[k] is not None else f"{'-':>12}" for k, _ in COLUMNS)
                lines.append(f"{name:<32}{cells}")
    for side, intervals in result.get("melanoma_auc_against_first", {}).items():
        lines += ["", f"{side}, {ALL}: melanoma AUC minus {names[0]}'s, paired 95 % interval"]
        for name, ci in intervals.items():
            lines.append(f"{name:<32}" + (f"{ci[0]:+.3f} to {ci[1]:+.3f}" if ci else "-"))
    text = "\n".join(lines)
    (args.out / "ensemble.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
