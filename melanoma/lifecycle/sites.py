"""A model version measured on the clinics' own confirmed cases: its figures on a job's, a folder's
or a site's reviewed images, a site's local operating point, and the promotion gate's per-site
comparison of a new version with the current one.

A version is measured on its own predictions: those stored when it scored the image, else it
scores the file now (read from the allowed roots, and only if its content is still the reviewed
one). The melanoma flag is set at the threshold the worker would apply to each image today.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from melanoma.core import files, images
from melanoma.core.errors import ImageError
from melanoma.core.labels import CLASS_NAMES
from melanoma.core.settings import Settings
from melanoma.ml import clinic
from melanoma.ml.evaluate import balanced_accuracy
from melanoma.store import confirmed, db, thresholds
from melanoma.store.schema import Job, Prediction, Review
from melanoma.versions.registry import SPLIT_FILE, Registry

log = logging.getLogger(__name__)
MELANOMA = CLASS_NAMES.index("melanoma")


@dataclass
class Measured:
    """A version's figures on a set of confirmed cases, and how they were obtained."""

    version: str
    figures: dict[str, Any]
    thresholds: dict[str, int] = field(default_factory=dict)  # whose threshold -> cases flagged at it
    rescored: int = 0  # cases the version scored now (it had not scored them before)
    skipped: list[str] = field(default_factory=list)  # cases it could not score, and why
    # The measured cases (skipped ones left out): their diagnoses, the version's P(melanoma), their
    # contents' hashes and the class index each was given (to pair two versions case by case).
    diagnoses: list[str] = field(default_factory=list)
    p_melanoma: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sha256: list[str] = field(default_factory=list)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def as_dict(self) -> dict[str, Any]:
        keys = ("version", "figures", "thresholds", "rescored", "skipped")
        return {k: getattr(self, k) for k in keys}


def trained_on(registry: Registry, version: str) -> set[str]:
    """Ids of the images ``version`` was trained on (a review's id is its content hash)."""
    path = registry.path(version) / SPLIT_FILE
    if not path.is_file():
        return set()
    return set(json.loads(path.read_text()).get("train", []))


def _score_files(
    cases: confirmed.Cases, wanted: list[int], registry: Registry, version: str, settings: Settings, predictor: Any
) -> tuple[dict[int, np.ndarray], list[str], Any]:
    """Probabilities of the ``wanted`` cases' files under ``version`` (loaded once, lazily)."""
    batch: list[tuple[int, np.ndarray]] = []
    skipped: list[str] = []
    for i in wanted:
        try:
            _, data = files.read_unchanged(
                cases.paths[i], cases.sha256[i], settings.allowed_roots, settings.max_file_bytes
            )
            if predictor is None:
                from melanoma.ml.predict import Predictor  # imports TensorFlow

                # Scored as the workers score (their views and scales), like the stored rows it joins.
                predictor = Predictor(
                    registry, batch_size=settings.batch_size, tta=settings.tta, scales=settings.tta_scales
                )
                predictor.load(version)
            limits = images.DecodeLimits(settings.max_image_pixels)
            batch.append((i, images.decode(data, predictor.input_size, limits=limits)))
        except ImageError as exc:
            skipped.append(f"{cases.paths[i]}: {exc}")
    out: dict[int, np.ndarray] = {}
    if batch:
        probs = predictor.predict(np.stack([x for _, x in batch]))
        out = {i: p for (i, _), p in zip(batch, probs)}
    return out, skipped, predictor


def measure(
    engine: Engine,
    registry: Registry,
    version: str,
    settings: Settings,
    job: Job | None = None,
    root: str | None = None,
    site: str | None = None,
    exclude: set[str] | None = None,
    predictors: dict[str, Any] | None = None,
) -> Measured:
    """``version``'s figures on the confirmed cases of ``job``, ``root`` or ``site`` (all when none).
    ``predictors`` keeps loaded versions across calls (by version)."""
    predictors = {} if predictors is None else predictors
    with db.session_scope(engine) as session:
        cases = confirmed.cases(session, job, root, site, version=version, exclude=exclude or ())
        limits = thresholds.for_version(session, version, registry.meta(version).melanoma_threshold, set(cases.jobs))
    probs = cases.probs.copy()
    missing = [i for i in range(len(cases)) if np.isnan(probs[i]).any()]
    found: dict[int, np.ndarray] = {}
    skipped: list[str] = []
    if missing:
        found, skipped, predictors[version] = _score_files(
            cases, missing, registry, version, settings, predictors.get(version)
        )
    for i, p in found.items():
        probs[i] = p
    keep = [i for i in range(len(cases)) if not np.isnan(probs[i]).any()]
    used: Counter[str] = Counter()
    flags: list[bool | None] = []
    for i in keep:
        at, whose = limits.resolve(cases.jobs[i], cases.paths[i])
        flags.append(None if at is None else bool(probs[i, MELANOMA] >= at))
        used[f"{whose} P>={at:.4f}" if at is not None else "none"] += 1
    diagnoses = [cases.diagnoses[i] for i in keep]
    weights = registry.meta(version).decision_weights
    given = [cases.classes[i] for i in keep]
    figures = clinic.figures(diagnoses, probs[keep], flags, weights, given)
    shas, classes = [cases.sha256[i] for i in keep], clinic.given_classes(probs[keep], weights, given)
    return Measured(version, figures, dict(used), len(found), skipped, diagnoses, probs[keep, MELANOMA], shas, classes)


def sites_with_reviews(engine: Engine, min_cases: int) -> dict[str, int]:
    """Sites with at least ``min_cases`` reviewed image contents, and how many."""
    with db.session_scope(engine) as session:
        rows = session.execute(
            select(Job.site, func.count(func.distinct(Review.sha256)))
            .join(Prediction, Prediction.job_id == Job.id)
            .join(Review, Review.sha256 == Prediction.sha256)
            .where(Job.site.is_not(None), Prediction.status == "ok")
            .group_by(Job.site)
        ).all()
    return {s: n for s, n in rows if s is not None and n >= min_cases}


def paired_intervals(new: Measured, old: Measured) -> dict[str, tuple[float, float] | None]:
    """Paired 95 % bootstrap intervals of new − old in balanced accuracy and melanoma AUC, on the cases
    both versions were measured on (each resample scores both on the same cases)."""
    mine = {sha: i for i, sha in enumerate(old.sha256)}
    pairs = [(i, mine[sha]) for i, sha in enumerate(new.sha256) if sha in mine]
    a, b = [i for i, _ in pairs], [j for _, j in pairs]
    diagnoses = [new.diagnoses[i] for i in a]
    is_mel = np.asarray([d == "melanoma" for d in diagnoses], dtype=bool)
    out: dict[str, tuple[float, float] | None] = {"balanced_accuracy": None, "melanoma_auc": None}
    if 0 < is_mel.sum() < len(is_mel):
        out["melanoma_auc"] = clinic.auc_difference_interval(is_mel, new.p_melanoma[a], old.p_melanoma[b])
    nine = [k for k, d in enumerate(diagnoses) if d in CLASS_NAMES]
    if nine:
        y = np.asarray([CLASS_NAMES.index(diagnoses[k]) for k in nine], dtype=int)
        new_pred, old_pred = new.classes[a][nine], old.classes[b][nine]

        def change(idx: np.ndarray) -> float:
            return balanced_accuracy(y[idx], new_pred[idx]) - balanced_accuracy(y[idx], old_pred[idx])

        out["balanced_accuracy"] = clinic.bootstrap_interval(change, len(y))
    return out


def _readings(new: Measured, old: Measured) -> tuple[list[str], list[str]]:
    """Each figure of ``new`` against ``old``'s with its paired change reading: (those where ``new``
    is lower, those where it is not)."""
    intervals = paired_intervals(new, old)
    worse, rest = [], []
    for key, what in (("balanced_accuracy", "balanced accuracy"), ("melanoma_auc", "melanoma AUC")):
        a, b = new.figures[key]["value"], old.figures[key]["value"]
        if a is None or b is None:
            continue
        reading = clinic.change_reading(a - b, intervals[key])
        if a < b:
            worse.append(f"{what} {a:.3f}, below the current version's {b:.3f} ({reading})")
        else:
            rest.append(f"{what} {a:.3f} against {b:.3f} ({reading})")
    return worse, rest


def compare_on_sites(
    engine: Engine, registry: Registry, new: str, current: str, settings: Settings
) -> tuple[list[str], list[str]]:
    """Compare ``new`` with ``current`` on each site's confirmed cases (at least
    MELANOMA_REVIEW_GATE_MIN_CASES, leaving out images either version was trained on).
    Returns (why ``new`` is worse, per refusing site; what was compared)."""
    exclude = trained_on(registry, new) | trained_on(registry, current)
    refusals: list[str] = []
    compared: list[str] = []
    loaded: dict[str, Any] = {}
    for site in sorted(sites_with_reviews(engine, settings.review_gate_min_cases)):
        a = measure(engine, registry, new, settings, site=site, exclude=exclude, predictors=loaded)
        b = measure(engine, registry, current, settings, site=site, exclude=exclude, predictors=loaded)
        n = min(a.figures["cases"], b.figures["cases"])
        if n < settings.review_gate_min_cases:
            compared.append(f"site {site}: {n} cases not trained on, too few to compare")
            continue
        worse, rest = _readings(a, b)
        summary = f"site {site} ({n} confirmed cases)"
        if worse:
            refusals.append(f"{summary}: {', '.join(worse)}")
        else:
            compared.append(f"{summary}: not worse" + (f": {', '.join(rest)}" if rest else ""))
    return refusals, compared
