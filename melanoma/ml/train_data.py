"""What a training run trains on: the cleaned images of the data folders, split by lesion (or as an
earlier version split them), with the sources left out of training set aside."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from melanoma.core.labels import CLASS_NAMES
from melanoma.core.settings import REPO_ROOT
from melanoma.ml import data, splits
from melanoma.ml.recipes import TrainConfig
from melanoma.versions.registry import SPLIT_FILE, Registry

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The cleaned, split data of a run."""

    train: list[data.Sample]
    val: list[data.Sample]
    test: list[data.Sample]
    info: dict = field(default_factory=dict)
    external: list[data.Sample] = field(default_factory=list)
    report: data.CleanReport | None = None
    # the training side's images that --train-fraction left out (never drawn, not validated on)
    unused: list[data.Sample] = field(default_factory=list)


def git_commit() -> str | None:
    """The commit of the code that trains, for the version's metadata."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def inherited_split(registry: Registry, version: str, data_dirs: tuple[Path, ...]) -> dict[str, str]:
    """Image id -> ``train``/``val``/``test`` as ``version`` was split, recomputed from its metadata.

    Raises ValueError when the data it was trained on cannot be found among ``data_dirs`` or no
    longer gives the same images (its fingerprint).
    """
    meta = registry.meta(version)
    recorded = registry.path(version) / SPLIT_FILE
    if recorded.is_file():
        sides = json.loads(recorded.read_text())
        # External images were never trained on, but they are the excluded source's: keep them out of training.
        # "unused" lists training-side images a --train-fraction run left out; they stay under "train".
        return {
            i: side if side != "external" else "test" for side, ids in sides.items() if side != "unused" for i in ids
        }
    d = meta.data
    dirs = []
    for name in d.get("sources", []):
        match = [p for p in data_dirs if str(Path(p).resolve()).endswith("/" + name)]
        if not match:
            raise ValueError(f"cannot reproduce the split of {version}: its source {name!r} is not among --data")
        dirs.append(match[0])
    kept, _ = data.read_clean(tuple(dirs))
    if d.get("limit_per_class"):
        kept = data.limit_per_class(kept, d["limit_per_class"], meta.seed or 123)
    if data.fingerprint(kept) != d.get("fingerprint"):
        raise ValueError(f"cannot reproduce the split of {version}: its training data changed")
    train, val, test = splits.split_three(
        kept, d.get("val_fraction", 0.2), d.get("test_fraction", 0.0), meta.seed or 123
    )
    return {
        **{s.image_id: "train" for s in train},
        **{s.image_id: "val" for s in val},
        **{s.image_id: "test" for s in test},
    }


def validation_samples(registry: Registry, version: str, data_dirs: tuple[Path, ...]) -> tuple[list[data.Sample], int]:
    """The images ``version`` was validated on (its split), found among ``data_dirs``: what the gate
    compares it with another version on; and how many its split holds (more than were found when a
    folder is missing or named at another level). Raises ValueError when none are there."""
    sides = inherited_split(registry, version, data_dirs)
    kept, _ = data.read_clean(data_dirs)
    val = [s for s in kept if sides.get(s.image_id) == "val"]
    if not val:
        raise ValueError(f"none of {version}'s validation images are in the --data folders")
    return val, sum(1 for side in sides.values() if side == "val")


def listing(cfg: TrainConfig) -> str:
    """A cheap fingerprint of what a run would train on: the data folders' files and, with review
    sites, their confirmed diagnoses. The trainer service retrains when it changes."""
    found = data.listing_fingerprint(list(cfg.data_dirs))
    if not cfg.review_sites:
        return found
    from melanoma.core.settings import get_settings
    from melanoma.ml.reviewed import reviews_fingerprint

    return found + ":" + reviews_fingerprint(cfg.review_sites, get_settings())


def prepare(cfg: TrainConfig, registry: Registry | None = None) -> Prepared:
    """Read, clean and split the data (by lesion, before any augmentation).

    Images of an excluded source (and their copies in other sources) are kept out of all three
    splits and returned as the external test. With ``cfg.split_of`` (else ``cfg.init_from``) the
    split of that version is kept for the images it knew.
    """
    reviewed: list[data.Sample] = []
    review_skipped: list[str] = []
    if cfg.review_sites:
        from melanoma.core.settings import get_settings
        from melanoma.ml.reviewed import review_samples

        reviewed, review_skipped = review_samples(cfg.review_sites, get_settings())
        for reason in review_skipped:
            log.warning("confirmed case left out of training: %s", reason)
    kept, report = data.read_clean(cfg.data_dirs, reviewed)
    if cfg.limit_per_class:
        kept = data.limit_per_class(kept, cfg.limit_per_class, cfg.seed)
    unknown = set(cfg.exclude_sources) - {s for k in kept for s in splits.sources_of(k)}
    if unknown:
        raise ValueError(f"--exclude-source {', '.join(sorted(unknown))}: no such source among the data folders")
    kept, external = splits.separate_sources(kept, set(cfg.exclude_sources))
    split_of = cfg.split_of or cfg.init_from
    if split_of:
        if registry is None:
            raise ValueError("keeping a version's split needs the registry")
        assigned = inherited_split(registry, split_of, cfg.data_dirs)
        train, val, test = splits.split_inherited(kept, assigned, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:
        train, val, test = splits.split_three(kept, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    unused: list[data.Sample] = []
    if cfg.train_fraction < 1:
        # After the split, so that validation and test are the full run's: whole lesions, by class.
        train, unused = splits.split_by_lesion(train, 1 - cfg.train_fraction, cfg.seed + 2)
    info = {
        "sources": [
            Path(d).name if Path(d).name not in ("Train", "train") else f"{Path(d).parent.name}/{Path(d).name}"
            for d in cfg.data_dirs
        ]
        + sorted({s.source for s in reviewed}),
        "review_sites": list(cfg.review_sites),
        "review_cases": len(reviewed),
        "review_cases_left_out": review_skipped[:100],
        "excluded_sources": list(cfg.exclude_sources),
        "initialised_from": cfg.init_from,
        "cleaning": report.as_dict(),
        "fingerprint": data.fingerprint(kept),
        "listing_fingerprint": listing(cfg),
        "split": "by lesion (HAM10000 lesion id where known, else image), stratified by class, before augmentation"
        + (f"; images {split_of} was trained, validated or tested on keep their side" if split_of else "")
        + (
            f"; trained on {cfg.train_fraction:.0%} of the training side's lesions (--train-fraction, "
            f"{len(unused)} images left out)"
            if unused
            else ""
        ),
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "limit_per_class": cfg.limit_per_class,
        "train_fraction": cfg.train_fraction,
        "train_images_unused": len(unused),
        "train_images": len(train),
        "val_images": len(val),
        "test_images": len(test),
        "external_images": len(external),
        "train_counts": data.class_counts(train),
        "val_counts": data.class_counts(val),
        "test_counts": data.class_counts(test),
        "source_counts": {
            "train": splits.source_class_counts(train),
            "val": splits.source_class_counts(val),
            "test": splits.source_class_counts(test),
            "external": splits.source_class_counts(external),
        },
    }
    return Prepared(train, val, test, info, external=external, report=report, unused=unused)


def print_data_report(info: dict, file: TextIO = sys.stderr) -> None:
    """What cleaning dropped and the class distribution before and after rebalancing, as a table."""
    c = info["cleaning"]
    print(
        f"data: read {c['read']}, kept {c['kept']}; dropped {c['dropped_duplicates']} duplicates and "
        f"{c['dropped_ambiguous']} ambiguous; relabelled {c['relabelled']}",
        file=file,
    )
    fit_label = "/epoch" if "sampling" in info else "= fit"
    print(f"{'class':<28} {'train':>6} {fit_label:>6} {'val':>6} {'test':>6} {'extern':>6}", file=file)
    external = info.get("source_counts", {}).get("external", {})
    for name in CLASS_NAMES:
        print(
            f"{name:<28} {info['train_counts'][name]:>6} {info['train_counts_after_rebalancing'][name]:>6} "
            f"{info['val_counts'][name]:>6} {info['test_counts'][name]:>6} "
            f"{sum(counts.get(name, 0) for counts in external.values()):>6}",
            file=file,
        )
