"""The promotion gate: a version becomes current only if it loads, predicts sane
probabilities, and is not worse than the current version on the same validation images."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from melanoma import evaluate
from melanoma.errors import one_line
from melanoma.registry import Registry, RegistryError

log = logging.getLogger(__name__)


@dataclass
class GateResult:
    """What the gate decided and why."""

    promoted: bool
    reason: str
    new_score: float | None = None
    current_score: float | None = None


def smoke_batch(n: int = 8, seed: int = 0) -> np.ndarray:
    """A fixed batch of uint8 images (noise, black, white, grey) for the sanity check."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 180, 180, 3), dtype=np.uint8)
    x[1], x[2], x[3] = 0, 255, 128
    return x


def smoke_check(registry: Registry, version: str):
    """Load ``version`` into a Predictor and check its probabilities; returns the Predictor."""
    from melanoma.predict import Predictor

    p = Predictor(registry, batch_size=8)
    p.load(version)
    probs = p.predict(smoke_batch())
    if (
        not np.all(np.isfinite(probs))
        or np.any(probs < 0)
        or np.any(probs > 1)
        or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    ):
        raise RegistryError(f"model version {version!r} predicts invalid probabilities on the smoke batch")
    return p


def _per_source(y: np.ndarray, probs: np.ndarray, sources: list[str] | None) -> str:
    if not sources:
        return ""
    parts = []
    for src in sorted(set(sources)):
        mask = np.asarray([s == src for s in sources])
        parts.append(f"{src} {evaluate.metrics(y[mask], probs[mask])['balanced_accuracy']:.3f}")
    return " (" + ", ".join(parts) + ")"


def gate(
    registry: Registry,
    version: str,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    force: bool = False,
    val_sources: list[str] | None = None,
) -> GateResult:
    """Promote ``version`` if it passes the gate (or unconditionally with ``force``).

    With ``val_sources`` (the source of each validation image) the reason also gives both
    versions' balanced accuracy per source, on the same images.
    """
    if force:
        registry.set_current(version, reason="forced")
        return GateResult(True, "forced")
    try:
        new = smoke_check(registry, version)
    except Exception as exc:
        return GateResult(False, f"refused: {one_line(exc)}")
    current = registry.current()
    if current == version:
        return GateResult(True, "already current")
    result = GateResult(True, "no current version")
    if current is not None and x_val is not None and y_val is not None:
        new_probs = new.predict(x_val)
        new_score = evaluate.metrics(y_val, new_probs)["balanced_accuracy"]
        try:
            old = smoke_check(registry, current)
        except Exception as exc:
            result = GateResult(True, f"current version {current} is unusable ({one_line(exc)})", new_score)
        else:
            old_probs = old.predict(x_val)
            old_score = evaluate.metrics(y_val, old_probs)["balanced_accuracy"]
            detail = (
                f"; per source: new{_per_source(y_val, new_probs, val_sources)}, "
                f"current{_per_source(y_val, old_probs, val_sources)}"
                if val_sources
                else ""
            )
            if new_score < old_score:
                return GateResult(
                    False,
                    f"refused: balanced accuracy {new_score:.4f} is below the current "
                    f"version's {old_score:.4f} on the same {len(y_val)} validation images" + detail,
                    new_score,
                    old_score,
                )
            result = GateResult(
                True, f"balanced accuracy {new_score:.4f} ≥ current {old_score:.4f}" + detail, new_score, old_score
            )
    elif current is not None:
        result = GateResult(True, "loads and predicts valid probabilities (no validation data to compare on)")
    registry.set_current(version, reason="gate: " + result.reason)
    return result
