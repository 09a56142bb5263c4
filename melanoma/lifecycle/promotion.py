"""The promotion gate: a version becomes current only if it loads, predicts sane
probabilities, is not worse than the current version on the same validation images, and is not
worse on any clinic's own confirmed cases."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from melanoma.core.decision import predicted_classes
from melanoma.core.errors import one_line
from melanoma.core.settings import Settings, get_settings
from melanoma.ml import clinic, data, evaluate
from melanoma.versions.registry import Registry

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from melanoma.ml.predict import Predictor

log = logging.getLogger(__name__)


@dataclass
class GateResult:
    """What the gate decided and why."""

    promoted: bool
    reason: str
    new_score: float | None = None
    current_score: float | None = None


def _probabilities(predictor: Predictor, x_val: np.ndarray, val_paths: list[Path] | None) -> np.ndarray:
    """``predictor``'s probabilities for the validation images, decoded at its own input size: from
    the files when given (versions of different input sizes see the same images as each would in
    the worker), else the arrays resized."""
    size = predictor.input_size
    if tuple(x_val.shape[1:3]) != size:
        if val_paths is not None:
            x_val, _ = data.load_arrays(val_paths, [0] * len(val_paths), "gate", size)
        else:
            from PIL import Image

            x_val = np.stack(
                [np.asarray(Image.fromarray(x).resize(size[::-1], Image.Resampling.BILINEAR)) for x in x_val]
            )
    return predictor.predict(x_val)


def _score(y: np.ndarray, predicted: np.ndarray, sources: list[str] | None) -> tuple[float, str]:
    """The gate's figure (evaluate.gate_figure) of the classes a version gave (``predicted``, from its
    decision weights) and how to read it."""
    score, per = evaluate.gate_figure(y, predicted, sources)
    if per:
        detail = ", ".join(f"{k} {v:.3f}" for k, v in per.items())
        return score, f"mean balanced accuracy over sources ({detail})"
    return score, "balanced accuracy"


def _figure_change_interval(
    y: np.ndarray, new_pred: np.ndarray, old_pred: np.ndarray, sources: list[str] | None
) -> tuple[float, float] | None:
    """Paired 95 % bootstrap interval of the change in the gate's figure: both versions scored on
    the same resampled validation images, each source resampled within itself (a free resample
    could leave a small source under MIN_SOURCE_IMAGES, and the figure would drop it)."""
    src = np.asarray(sources) if sources else None

    def change(idx: np.ndarray) -> float:
        s = None if src is None else src[idx].tolist()
        new = evaluate.gate_figure(y[idx], new_pred[idx], s)[0]
        return new - evaluate.gate_figure(y[idx], old_pred[idx], s)[0]

    return clinic.bootstrap_interval(change, len(y), strata=sources or None)


def compare(
    y: np.ndarray,
    new: tuple[np.ndarray, list[float] | None],
    current: tuple[np.ndarray, list[float] | None],
    sources: list[str] | None,
) -> tuple[bool, str, float, float]:
    """Compare a new version with the current one on the same validation images ``y``: each side's
    probabilities and decision weights. Returns whether the new one passes, why (or what was
    compared), and both versions' gate figures.

    The new version must be at least as good on the gate's figure (:func:`_score`) and must rank
    melanomas at least as well (AUC of P(melanoma)): the figure weighs every class alike, and a
    version can gain on the other eight classes while missing more melanomas, the class the clinics
    weigh most (the site check below holds each clinic's cases to the same two figures).

    The rule is strict on purpose (a clinic would rather keep the version it knows), but each change
    is read against a paired bootstrap interval, so that whoever promotes can tell a version that is
    worse from one these images cannot tell apart (and promote it by force), and a promotion says
    whether its gain is more than the draw of validation images."""
    y = np.asarray(y)
    new_pred, old_pred = predicted_classes(new[0], new[1]), predicted_classes(current[0], current[1])
    new_score, new_detail = _score(y, new_pred, sources)
    old_score, old_detail = _score(y, old_pred, sources)
    figure = clinic.change_reading(new_score - old_score, _figure_change_interval(y, new_pred, old_pred, sources))
    n = len(y)
    if new_score < old_score:
        why = (
            f"{new_detail}: {new_score:.4f}, below the current version's {old_detail}: {old_score:.4f}, "
            f"on the same {n} validation images ({figure})"
        )
        return False, why, new_score, old_score
    is_mel = y == evaluate.MELANOMA
    new_mel, old_mel = new[0][:, evaluate.MELANOMA], current[0][:, evaluate.MELANOMA]
    new_auc, old_auc = evaluate.roc_auc(is_mel, new_mel), evaluate.roc_auc(is_mel, old_mel)
    auc = ""
    if new_auc is not None and old_auc is not None:
        auc = clinic.change_reading(new_auc - old_auc, clinic.auc_difference_interval(is_mel, new_mel, old_mel))
    if new_auc is not None and old_auc is not None and new_auc < old_auc:
        why = (
            f"melanoma AUC {new_auc:.4f}, below the current version's {old_auc:.4f}, on the same {n} validation "
            f"images ({auc}; {new_detail}: {new_score:.4f} against {old_score:.4f})"
        )
        return False, why, new_score, old_score
    detail = f"{new_detail}: {new_score:.4f} ≥ current {old_detail}: {old_score:.4f} ({figure})"
    if new_auc is not None and old_auc is not None:
        detail += f"; melanoma AUC {new_auc:.4f} ≥ {old_auc:.4f} ({auc})"
    return True, detail, new_score, old_score


def _reviews_engine(settings: Settings) -> Engine | None:
    """The results database, when it exists and holds reviews (else the per-site check is skipped)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from melanoma.store import db

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).expanduser().is_file()):
        return None
    engine = db.get_engine(settings.database_url)
    try:
        return engine if inspect(engine).has_table("reviews") else None
    except DBAPIError as exc:
        log.warning("the gate cannot read the clinics' reviews (%s); validation images only", one_line(exc))
        return None


def site_refusals(registry: Registry, version: str, current: str, settings: Settings) -> tuple[list[str], list[str]]:
    """Why ``version`` is worse than ``current`` on some site's confirmed cases (empty when it is
    not, or no site has enough), and what was compared."""
    engine = _reviews_engine(settings)
    if engine is None:
        return [], []
    from melanoma.lifecycle.sites import compare_on_sites

    return compare_on_sites(engine, registry, version, current, settings)


def gate(
    registry: Registry,
    version: str,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    force: bool = False,
    val_sources: list[str] | None = None,
    val_paths: list[Path] | None = None,
    settings: Settings | None = None,
) -> GateResult:
    """Promote ``version`` if it passes the gate (or unconditionally with ``force``).

    Both versions are compared on the same validation images. With ``val_sources`` (the source of
    each validation image) the figure is the mean over sources (each with at least
    MIN_SOURCE_IMAGES images) of the per-source balanced accuracy: a version that gains on one
    source by learning what marks that source, and loses on the others, does not pass. Without
    sources, the balanced accuracy of all images. Each version sees the images at its own input size
    (decoded from ``val_paths`` when given), and it must rank the melanomas among them at least as
    well (:func:`compare`). Then, on every site with enough confirmed diagnoses in
    the results database (MELANOMA_REVIEW_GATE_MIN_CASES, not trained on), the version must not be
    worse than the current one in balanced accuracy or melanoma AUC.
    """
    if force:  # no check, so no TensorFlow either: promoting by force is instant
        registry.set_current(version, reason="forced")
        return GateResult(True, "forced")
    from melanoma.ml.predict import smoke_check  # imports TensorFlow

    try:
        new = smoke_check(registry, version)
    except Exception as exc:
        return GateResult(False, f"refused: {one_line(exc)}")
    current = registry.current()
    if current == version:
        return GateResult(True, "already current")
    result = GateResult(True, "no current version")
    if current is not None and x_val is not None and y_val is not None:
        new_probs = _probabilities(new, x_val, val_paths)
        try:
            old = smoke_check(registry, current)
        except Exception as exc:
            new_score, _ = _score(np.asarray(y_val), predicted_classes(new_probs, new.decision_weights), val_sources)
            result = GateResult(True, f"current version {current} is unusable ({one_line(exc)})", new_score)
        else:
            old_probs = _probabilities(old, x_val, val_paths)
            passed, why, new_score, old_score = compare(
                y_val, (new_probs, new.decision_weights), (old_probs, old.decision_weights), val_sources
            )
            if not passed:
                return GateResult(False, f"refused: {why}", new_score, old_score)
            result = GateResult(True, why, new_score, old_score)
    elif current is not None:
        result = GateResult(True, "loads and predicts valid probabilities (no validation data to compare on)")
    if current is not None:
        refusals, compared = site_refusals(registry, version, current, settings or get_settings())
        if refusals:
            return GateResult(
                False,
                "refused: worse on a site's confirmed cases: " + "; ".join(refusals),
                result.new_score,
                result.current_score,
            )
        if compared:
            result.reason += "; " + "; ".join(compared)
    registry.set_current(version, reason="gate: " + result.reason)
    return result
