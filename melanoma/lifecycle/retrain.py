"""The trainer service's loop: retrain when labelled images were added (or on an interval),
and publish through the promotion gate."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from melanoma.lifecycle.promotion import GateResult, gate
from melanoma.ml import train_data
from melanoma.versions.registry import ModelMeta, Registry

if TYPE_CHECKING:
    from melanoma.ml.recipes import TrainConfig

log = logging.getLogger(__name__)
STATE_FILE = ".trainer-state.json"


def train_and_gate(cfg: TrainConfig, registry: Registry, force: bool = False) -> tuple[ModelMeta, GateResult]:
    """Train a version with ``cfg``, publish it, and promote it through the gate."""
    from melanoma.ml.train import train

    meta, prepared, (x_val, y_val) = train(cfg, registry)
    val = prepared.val
    result = gate(registry, meta.version, x_val, y_val, force, [s.source for s in val], [s.path for s in val])
    log.info("version %s %s: %s", meta.version, "promoted" if result.promoted else "not promoted", result.reason)
    return meta, result


def _state(registry: Registry) -> dict:
    try:
        return json.loads((registry.root / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_state(registry: Registry, state: dict) -> None:
    registry.root.mkdir(parents=True, exist_ok=True)
    tmp = registry.root / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(registry.root / STATE_FILE)


def due(
    cfg: TrainConfig, registry: Registry, every_s: float | None, now: float | None = None, listing: str | None = None
) -> str | None:
    """Why a training run is due now (new images, or the interval passed), or None.

    ``listing`` is the data folders' listing fingerprint, when the caller has it already.
    """
    now = time.time() if now is None else now
    state = _state(registry)
    listing = listing or train_data.listing(cfg)
    last = state.get("listing_fingerprint")
    if last is None:
        current = registry.current()
        if current is not None:
            last = registry.meta(current).data.get("listing_fingerprint")
    if listing != last:
        return "labelled images changed" if last else "no model trained on this data yet"
    if every_s and now - state.get("trained_at", 0) >= every_s:
        return "interval passed"
    return None


def serve(
    cfg: TrainConfig, registry: Registry, poll_s: float = 60.0, every_s: float | None = None, once: bool = False
) -> None:
    """Watch ``cfg.data_dirs``; when a run is due, train, gate and remember what was trained on."""
    while True:
        listing = train_data.listing(cfg)
        reason = due(cfg, registry, every_s, listing=listing)
        if reason:
            log.info("training (%s)", reason)
            try:
                meta, result = train_and_gate(cfg, registry)
                _save_state(
                    registry,
                    {
                        "listing_fingerprint": listing,
                        "trained_at": time.time(),
                        "version": meta.version,
                        "promoted": result.promoted,
                        "reason": result.reason,
                        "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    },
                )
            except Exception:
                log.exception("training failed; will try again at the next poll")
        if once:
            return
        time.sleep(poll_s)
