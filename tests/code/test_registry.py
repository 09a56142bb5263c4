"""Model registry: atomic publish, current pointer, and a worker-side predictor that survives bad versions."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from melanoma.versions.registry import ModelMeta, Registry, RegistryError


def test_publish_and_current(tmp_path, shipped_model_dir):
    reg = Registry(tmp_path / "models")
    src = Registry(shipped_model_dir)
    model_file = src.path(src.current()) / "model.keras"
    meta = ModelMeta(version="origin-test-1", architecture="origin", metrics={"accuracy": 0.5})
    reg.publish(model_file, meta, make_current=True)
    assert reg.current() == "origin-test-1"
    assert [m.version for m in reg.versions()] == ["origin-test-1"]
    assert reg.meta("origin-test-1").metrics == {"accuracy": 0.5}
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".")]  # no temp folders left
    with pytest.raises(RegistryError, match="already exists"):
        reg.publish(model_file, ModelMeta(version="origin-test-1", architecture="origin"))
    with pytest.raises(RegistryError, match="not found"):
        reg.set_current("nope")
    assert reg.current() == "origin-test-1"


def test_failed_publish_leaves_nothing(tmp_path):
    reg = Registry(tmp_path / "models")
    with pytest.raises(FileNotFoundError):
        reg.publish(tmp_path / "missing.keras", ModelMeta(version="v1", architecture="origin"))
    assert list(reg.root.iterdir()) == []


def test_invalid_version_ids(tmp_path):
    reg = Registry(tmp_path)
    for bad in ["", "../x", ".hidden", "a/b"]:
        with pytest.raises(RegistryError):
            reg.path(bad)


def test_shipped_versions_load_and_the_origin_baseline_stays(shipped_model_dir):
    """Every shipped version loads and predicts valid probabilities; the origin baseline is kept
    beside any better model; the registry stays small enough to ship."""
    from melanoma.ml.predict import smoke_check

    reg = Registry(shipped_model_dir)
    metas = reg.versions()
    assert "origin" in {m.architecture for m in metas}
    assert reg.current() in {m.version for m in metas}
    for meta in metas:
        smoke_check(reg, meta.version)
    size = sum(f.stat().st_size for f in Path(shipped_model_dir).rglob("*") if f.is_file())
    assert size < 100 * 1024 * 1024


def test_predictor_keeps_working_version_when_new_one_is_broken(tmp_path, shipped_model_dir):
    from melanoma.ml.predict import Predictor

    root = tmp_path / "models"
    shutil.copytree(shipped_model_dir, root)
    reg = Registry(root)
    good = reg.current()
    p = Predictor(reg, batch_size=4)
    assert p.refresh() is True and p.version == good
    broken = root / "origin-broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a keras file")
    (broken / "metadata.json").write_text(json.dumps({"version": "origin-broken", "architecture": "origin"}))
    reg.set_current("origin-broken")
    assert p.refresh() is False
    assert p.version == good
    probs = p.predict(np.zeros((3, 180, 180, 3), np.uint8))
    assert probs.shape == (3, 9)


def test_no_current_version_is_an_error(tmp_path):
    from melanoma.ml.predict import Predictor

    with pytest.raises(RegistryError, match="no current model version"):
        Predictor(Registry(tmp_path)).refresh()


def test_history_and_rollback(tmp_path, shipped_model_dir):
    reg = Registry(tmp_path / "models")
    src = Registry(shipped_model_dir)
    model_file = src.path(src.current()) / "model.keras"
    for v in ("v1", "v2", "v3"):
        reg.publish(model_file, ModelMeta(version=v, architecture="origin"), make_current=True)
    assert [h["version"] for h in reg.history()] == ["v1", "v2", "v3"]
    assert reg.rollback() == "v2" and reg.current() == "v2"
    assert reg.history()[-1]["reason"] == "rollback"
    assert reg.rollback() == "v1"
    with pytest.raises(RegistryError, match="no earlier"):
        reg.rollback()


def test_a_corrupt_metrics_file_is_a_one_line_registry_error(tmp_path, shipped_model_dir):
    reg = Registry(tmp_path / "models")
    src = Registry(shipped_model_dir)
    meta = src.meta(src.current())
    reg.publish(src.path(meta.version) / "model.keras", meta)
    (reg.path(meta.version) / "metrics.json").write_text('{"balanced_accuracy": 0.5,')
    with pytest.raises(RegistryError, match=r"unreadable metrics.json: Expecting"):
        reg.meta(meta.version)
