"""Trainer behaviour on tiny real subsets: recipes, leak-free augmentation, the gate, serve, evaluate."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from melanoma.ml import data, splits
from melanoma.versions.registry import Registry
from tests.conftest import copy_images, run_cli, service_env

CLASSES = ["melanoma", "nevus", "basal cell carcinoma", "vascular lesion"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Ten real images of each of four classes, copied so tests may add more."""
    root = tmp_path_factory.mktemp("tiny") / "train"
    copy_images(root, 10, CLASSES)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["origin", "resnet"])
def test_tiny_training_publishes_a_usable_version(tmp_path, tiny_data, recipe):
    from melanoma.core.decision import prior_weights
    from melanoma.ml.predict import Predictor
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train

    reg = Registry(tmp_path / "models")
    cfg = TrainConfig(data_dirs=(tiny_data,), recipe=recipe, epochs=2, augment_per_class=3, val_fraction=0.3)
    meta, prepared, _ = train(cfg, reg)
    assert reg.current() is None  # publishing alone does not promote
    folder = reg.path(meta.version)
    for f in (
        "model.keras",
        "metadata.json",
        "metrics.json",
        "MODEL_CARD.md",
        "training_curves.png",
        "confusion_matrix.png",
        "roc_melanoma.png",
        "class_distribution.png",
        "data_report.json",
        "familiarity.npz",
    ):
        assert (folder / f).stat().st_size > 0, f
    assert meta.architecture == recipe
    assert meta.metrics["n"] == meta.data["val_images"] == len(prepared.val) > 0
    assert meta.melanoma_threshold is not None
    assert meta.data["fingerprint"] and meta.data["listing_fingerprint"]
    card = (folder / "MODEL_CARD.md").read_text()
    assert meta.version in card and "## Validation" in card and "roc_melanoma.png" in card
    expected_extra = 4 * 3 if recipe == "origin" else 0  # resnet only tops classes up below the target
    assert meta.data["augmented_images"] == expected_extra
    if recipe == "origin":  # reproduced as it was: the most probable class
        assert meta.decision_weights is None and "balanced_accuracy_most_probable" not in meta.metrics
    else:  # decision weights fitted on validation, from the draws per class, in the card and the metrics
        assert meta.decision_power is not None and len(meta.decision_weights or []) == 9
        assert meta.decision_weights == prior_weights(meta.data["train_counts_after_rebalancing"], meta.decision_power)
        assert meta.metrics["balanced_accuracy"] >= meta.metrics["balanced_accuracy_most_probable"]
        assert "class given: the highest of the probabilities times decision weights" in card
    p = Predictor(reg, batch_size=4)
    p.load(meta.version)
    assert p.decision_weights == meta.decision_weights
    # Training fitted the familiarity statistics; the worker's call applies them.
    assert p.familiarity is not None and p.familiarity.info["fitted_by"] == "training", p.familiarity_note
    assert p.familiarity.info["val_images"] == len(prepared.val)
    probs, familiar = p.assess(np.zeros((2, 180, 180, 3), np.uint8))
    assert probs.shape == (2, 9) and familiar is not None and np.all((familiar >= 0) & (familiar <= 100))


@pytest.mark.slow
def test_calibrate_familiarity_refits_a_version_from_its_own_split(tmp_path, tiny_data):
    """`melanoma calibrate-familiarity` (for versions trained before familiarity existed): from the
    version's split among the given folders it writes statistics the worker loads; folders that do
    not hold the split give one line and write nothing."""
    from melanoma.ml.familiarity import Familiarity
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train
    from melanoma.versions.registry import FAMILIARITY_FILE

    reg = Registry(tmp_path / "models")
    cfg = TrainConfig(data_dirs=(tiny_data,), recipe="origin", epochs=1, augment_per_class=0, val_fraction=0.3)
    meta, prepared, _ = train(cfg, reg)
    stats_file = reg.path(meta.version) / FAMILIARITY_FILE
    stats_file.unlink()  # as a version from before familiarity
    env = service_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", "redis://127.0.0.1:1/0", reg.root, [tmp_path])
    elsewhere = tmp_path / "elsewhere"
    copy_images(elsewhere, 2, CLASSES, start=30)
    wrong = run_cli(["calibrate-familiarity", meta.version, "--data", str(elsewhere)], env, timeout=300)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "give the folders it was trained from" in wrong.stderr and not stats_file.exists()

    r = run_cli(["calibrate-familiarity", meta.version, "--data", str(tiny_data)], env, timeout=300)
    assert r.returncode == 0, r.stderr
    stats = Familiarity.load(stats_file)
    assert stats.info["fitted_by"] == "calibrate-familiarity" and stats.method == "mahalanobis+midlevel"
    # The origin network has no residual sums: the last layer that keeps a sixteenth of the height.
    assert stats.midlevel_layer and stats.midlevel is not None
    assert stats.info["val_images"] == len(prepared.val) and stats.info["train_images"] == len(prepared.train)


def test_augmentation_reads_only_training_images(tmp_path, tiny_data):
    from melanoma.ml.rebalance import augment

    samples, _ = data.clean(data.read_dataset(tiny_data))
    train, val = splits.split_by_lesion(samples, 0.3, seed=1)
    out = augment(train, {c: 5 for c in CLASSES}, tmp_path / "scratch", seed=1)
    assert len(out) == 5 * len(CLASSES)
    # Augmentor saw symlinks to training images only
    sources = {Path(p.readlink()).resolve() for p in (tmp_path / "scratch" / "source").rglob("*") if p.is_symlink()}
    assert sources == {s.path.resolve() for s in train}
    assert not sources & {s.path.resolve() for s in val}
    # and wrote nothing next to the data
    assert all(tmp_path / "scratch" in s.path.parents for s in out)
    assert not list(tiny_data.rglob("output"))


def test_split_three_is_leak_free(isic_dir):
    kept, _ = data.clean(data.read_dataset(isic_dir))
    train, val, test = splits.split_three(kept, 0.15, 0.15, seed=3)
    assert len(train) + len(val) + len(test) == len(kept)
    groups = [{s.lesion_id or s.image_id for s in part} for part in (train, val, test)]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert 0.1 < len(test) / len(kept) < 0.2 and 0.1 < len(val) / len(kept) < 0.2


def _copy_version(src: Registry, dst: Registry, version: str, new_id: str) -> None:
    shutil.copytree(src.path(version), dst.path(new_id))
    meta = json.loads((dst.path(new_id) / "metadata.json").read_text())
    meta["version"] = new_id
    (dst.path(new_id) / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.slow
def test_a_pretrained_version_trains_and_is_scored_at_its_own_input_size(tmp_path, tiny_data, shipped_model_dir):
    """The pretrained recipe end to end on a tiny set, with Lite1 at 192 pixels (neither the recipe's
    backbone nor its own size): the frozen part of the backbone keeps its ImageNet weights while the top
    blocks and the head learn, the version records its 192-pixel input, and the worker's scorer decodes
    images to that size."""
    from melanoma.core.settings import Settings, get_settings
    from melanoma.ml import backbones
    from melanoma.ml.predict import Predictor
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train
    from melanoma.pipeline.scoring import Scorer
    from melanoma.store import db, jobs

    reg = Registry(tmp_path / "models")
    cfg = TrainConfig(
        data_dirs=(tiny_data,),
        recipe="pretrained",
        epochs=2,
        samples_per_epoch=64,
        train_from_block=19,
        backbone="lite1",
        image_size=192,
        val_fraction=0.3,
    )
    meta, prepared, (x_val, y_val) = train(cfg, reg)
    assert meta.architecture == "pretrained" and meta.input_size == [192, 192, 3]
    # what the run changed from its recipe is recorded with the version
    changed = "; this run: epochs 2, samples per epoch 64, train from block 19, backbone lite1, image size 192"
    assert meta.recipe.endswith(changed), meta.recipe
    # The recipe keeps the epoch of lowest validation loss.
    history = json.loads((reg.path(meta.version) / "history.json").read_text())
    assert meta.metrics["best_epoch"] == int(np.argmin(history["val_loss"])) + 1
    # The gate compares it with a 180-pixel current version, each seeing the files at its own size.
    shipped = Registry(shipped_model_dir)
    _copy_version(shipped, reg, shipped.current(), "robust-1")
    reg.set_current("robust-1")
    from melanoma.lifecycle.promotion import gate

    result = gate(reg, meta.version, x_val, y_val, val_paths=[s.path for s in prepared.val])
    assert result.new_score is not None and result.current_score is not None, result.reason
    assert x_val.shape[1:3] == (192, 192)
    imagenet = backbones.imagenet_weights("lite1", get_settings().cache_dir / "backbones")
    model = reg.load(meta.version)
    frozen, trained = model.get_layer("_blocks.18._project_conv"), model.get_layer("_blocks.19._project_conv")
    np.testing.assert_array_equal(frozen.get_weights()[0], imagenet["_blocks.18._project_conv"][0])
    assert not np.allclose(trained.get_weights()[0], imagenet["_blocks.19._project_conv"][0])
    # batch normalisation keeps ImageNet's statistics everywhere, trained blocks included
    np.testing.assert_array_equal(model.get_layer("_blocks.19._bn2").get_weights()[2], imagenet["_blocks.19._bn2"][2])

    # A stage that continues the version keeps its split but draws and augments with streams of its own.
    from melanoma.ml.fit import stream_seed

    # It also builds its parent's backbone without being told, and refuses another before reading images.
    from melanoma.ml.train import continue_backbone

    with pytest.raises(ValueError, match=f"--backbone lite0: {meta.version} is a lite1 network"):
        continue_backbone(replace(cfg, backbone="lite0", train_from_block=None), meta)
    # a parent recorded without its backbone (before 2026-12-06) is read from its saved network
    unrecorded = replace(meta, backbone=None)
    continuing = replace(cfg, init_from=meta.version, backbone=None)
    assert continue_backbone(continuing, unrecorded, reg.path(meta.version) / "model.keras").backbone == "lite1"
    stage, _, _ = train(continuing, reg)
    assert meta.backbone == stage.backbone == "lite1"
    assert meta.data["stream_seed"] == cfg.seed
    assert stage.data["stream_seed"] == stream_seed(cfg.seed, meta.version) != cfg.seed
    assert stage.data["initialised_from"] == meta.version

    predictor = Predictor(reg, batch_size=4)
    predictor.load(meta.version)
    assert predictor.input_size == (192, 192)
    reg.set_current(meta.version, reason="test")
    engine = db.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.ensure_schema(engine)
    with db.session_scope(engine) as s:
        _, ids = jobs.create_job(s, tiny_data, jobs.discover(tiny_data)[:6])
    report = Scorer(engine, predictor, Settings(allowed_roots=(tiny_data,))).score(ids)
    assert report.scored == 6 and report.errors == 0 and report.model_version == meta.version
    with db.session_scope(engine) as s:
        from melanoma.store.schema import Prediction

        assert None not in s.scalars(select(Prediction.familiarity).where(Prediction.id.in_(ids))).all()


@pytest.fixture
def val_arrays(isic_dir):
    """Forty real images with labels, for gate decisions."""
    kept, _ = data.clean(data.read_dataset(isic_dir))
    subset = data.limit_per_class([s for s in kept if s.label in CLASSES], 10, seed=5)
    return data.load_arrays([s.path for s in subset], [s.label_index for s in subset])


@pytest.mark.slow
def test_gate_refuses_worse_and_broken_versions(tmp_path, shipped_model_dir, tiny_data, val_arrays):
    from melanoma.lifecycle.promotion import gate
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train

    reg = Registry(tmp_path / "models")
    shipped = Registry(shipped_model_dir)
    _copy_version(shipped, reg, shipped.current(), "good-1")
    reg.set_current("good-1")
    x, y = val_arrays

    # barely trained: worse on the same images
    weak, _, _ = train(
        TrainConfig(
            data_dirs=(tiny_data,), recipe="origin", epochs=1, augment_per_class=0, limit_per_class=3, val_fraction=0.34
        ),
        reg,
    )
    r = gate(reg, weak.version, x, y)
    assert not r.promoted and "below the current" in r.reason and r.new_score < r.current_score
    assert reg.current() == "good-1"

    # broken file: refused, current unchanged and still loads
    broken = reg.path("broken-1")
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"PK\x03\x04 not really a model")
    (broken / "metadata.json").write_text(json.dumps({"version": "broken-1", "architecture": "origin"}))
    r = gate(reg, "broken-1", x, y)
    assert not r.promoted and r.reason.startswith("refused")
    assert reg.current() == "good-1"
    from melanoma.ml.predict import smoke_check

    smoke_check(reg, reg.current())

    # as good as the current one: promoted; then rolled back
    _copy_version(shipped, reg, shipped.current(), "good-2")
    r = gate(reg, "good-2", x, y)
    assert r.promoted and reg.current() == "good-2"
    assert reg.rollback() == "good-1" and reg.current() == "good-1"
    # --force promotes anything
    assert gate(reg, weak.version, x, y, force=True).promoted and reg.current() == weak.version


def test_models_promote_with_data_gates_on_the_versions_validation_images(tmp_path, shipped_model_dir, tiny_data):
    """``melanoma models promote VERSION --data ...`` compares VERSION with the current version on
    VERSION's validation images (a one-line refusal when worse); without --data it only checks that
    the version loads and predicts."""
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train

    reg = Registry(tmp_path / "models")
    shipped = Registry(shipped_model_dir)
    _copy_version(shipped, reg, shipped.current(), "good-1")
    reg.set_current("good-1")
    weak, prepared, _ = train(
        TrainConfig(data_dirs=(tiny_data,), recipe="origin", epochs=1, augment_per_class=0, val_fraction=0.5), reg
    )
    env = service_env(tmp_path, f"sqlite:///{tmp_path / 'none.db'}", "redis://127.0.0.1:1/0", reg.root, [tmp_path])
    promote = ["models", "promote", weak.version, "--model-dir", str(reg.root)]

    r = run_cli([*promote, "--data", str(tiny_data)], env, timeout=300)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"melanoma: error: {weak.version} not promoted: refused: ")
    assert "below the current version's balanced accuracy" in last
    assert f"on the same {len(prepared.val)} validation images" in last
    assert "note:" not in r.stderr
    assert reg.current() == "good-1"

    # One validation image missing from the folders given: compared on the others, and said so.
    partial = tmp_path / "partial"
    shutil.copytree(tiny_data, partial)
    (partial / prepared.val[0].path.relative_to(tiny_data)).unlink()
    r = run_cli([*promote, "--data", str(partial)], env, timeout=300)
    n = len(prepared.val)
    assert f"note: {n - 1} of {weak.version}'s {n} validation images are in the --data folders" in r.stderr
    assert r.returncode == 1 and f"on the same {n - 1} validation images" in r.stderr, r.stderr
    assert reg.current() == "good-1"

    elsewhere = tmp_path / "elsewhere"
    copy_images(elsewhere, 3, ["nevus"], start=40)  # new files: none of them in its split
    r = run_cli([*promote, "--data", str(elsewhere)], env, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
        f"melanoma: error: none of {weak.version}'s validation images are in the --data folders"
    ), r.stderr
    assert reg.current() == "good-1"

    r = run_cli(promote, env, timeout=300)
    assert r.returncode == 0 and "no validation data to compare on" in r.stderr, r.stderr
    assert reg.current() == weak.version


@pytest.mark.slow
def test_trainer_serve_trains_when_images_are_added(tmp_path, tiny_data):
    from melanoma.lifecycle.retrain import due
    from melanoma.ml.recipes import TrainConfig

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_data, data_dir)
    models = tmp_path / "models"
    env = service_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", "redis://127.0.0.1:1/0", models, [tmp_path])
    args = [
        "trainer",
        "serve",
        "--once",
        "--data",
        str(data_dir),
        "--recipe",
        "origin",
        "--epochs",
        "1",
        "--augment-per-class",
        "0",
        "--val-fraction",
        "0.3",
        "--model-dir",
        str(models),
    ]
    r = run_cli(args, env, timeout=300)
    assert r.returncode == 0, r.stderr
    reg = Registry(models)
    first = reg.current()
    assert first is not None and len(reg.versions()) == 1
    cfg = TrainConfig(data_dirs=(data_dir,))
    assert due(cfg, reg, every_s=None) is None  # nothing new: no retraining
    assert due(cfg, reg, every_s=3600, now=__import__("time").time() + 7200) == "interval passed"
    copy_images(data_dir, 2, ["dermatofibroma"])
    assert due(cfg, reg, every_s=None) == "labelled images changed"
    r = run_cli(args, env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(reg.versions()) == 2
    state = json.loads((models / ".trainer-state.json").read_text())
    assert state["version"] == reg.versions()[-1].version and "promoted" in state


def test_evaluate_command_matches_a_hand_computation(tmp_path, shipped_model_dir):
    from melanoma.core import images
    from melanoma.core.decision import predicted_classes
    from melanoma.core.labels import CLASS_NAMES
    from melanoma.ml.predict import Predictor

    folder = tmp_path / "labelled"
    paths = copy_images(folder, 4, ["melanoma", "nevus", "vascular lesion"], start=20)
    env = service_env(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", "redis://127.0.0.1:1/0", shipped_model_dir, [tmp_path]
    )
    r = run_cli(["evaluate", "current", str(folder), "--format", "json", "--plots", str(tmp_path / "plots")], env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)

    reg = Registry(shipped_model_dir)
    p = Predictor(reg, batch_size=4)
    p.refresh()
    probs = p.predict(np.stack([images.load(x, p.input_size) for x in paths]))
    truth = [CLASS_NAMES.index(x.parent.name) for x in paths]
    pred = predicted_classes(probs, p.decision_weights)  # the class the version gives
    correct = sum(int(a == b) for a, b in zip(truth, pred))
    assert got["n"] == 12
    assert got["accuracy"] == pytest.approx(correct / 12)
    recalls = [sum(1 for t, q in zip(truth, pred) if t == c and q == c) / 4 for c in sorted(set(truth))]
    assert got["balanced_accuracy"] == pytest.approx(sum(recalls) / 3)
    mel = CLASS_NAMES.index("melanoma")
    said_mel = [q == mel for q in pred]
    assert got["melanoma_sensitivity"] == pytest.approx(sum(said_mel[:4]) / 4)
    assert got["melanoma_specificity"] == pytest.approx(sum(not m for m in said_mel[4:]) / 8)
    assert got["confusion_matrix"][mel][mel] == sum(said_mel[:4])
    assert (tmp_path / "plots" / "roc_melanoma.png").stat().st_size > 0
    # the table format prints the same figures
    r = run_cli(["evaluate", "current", str(folder)], env)
    assert f"accuracy               {correct / 12:.3f}" in r.stdout


def test_evaluate_errors(tmp_path, shipped_model_dir):
    env = service_env(
        tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", "redis://127.0.0.1:1/0", shipped_model_dir, [tmp_path]
    )
    r = run_cli(["evaluate", "no-such-version", str(tmp_path)], env)
    assert r.returncode == 1 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["evaluate", "current", str(tmp_path / "missing")], env)
    assert r.returncode == 1 and "folder not found" in r.stderr


def test_train_fraction_draws_whole_lesions_by_class_and_keeps_validation_and_test(tiny_data):
    from collections import Counter

    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train_data import prepare

    cfg = TrainConfig(data_dirs=(tiny_data,), recipe="robust", val_fraction=0.2, test_fraction=0.2)
    full, part = prepare(cfg), prepare(replace(cfg, train_fraction=0.5))
    assert part.val == full.val and part.test == full.test and not full.unused
    assert sorted(part.train + part.unused, key=lambda s: str(s.path)) == full.train
    assert Counter(s.label for s in part.train) == Counter(s.label for s in part.unused) == dict.fromkeys(CLASSES, 3)
    assert part.info["train_fraction"] == 0.5 and part.info["train_images_unused"] == 12
    # a quarter of each class's 6: whole lesions are left out until three quarters are
    assert Counter(s.label for s in prepare(replace(cfg, train_fraction=0.25)).train) == dict.fromkeys(CLASSES, 1)
    # the same fraction and seed draw the same images; another seed moves the split itself
    assert prepare(replace(cfg, train_fraction=0.5)).train == part.train
    assert prepare(replace(cfg, train_fraction=0.5, seed=5)).val != part.val


@pytest.mark.slow
def test_robust_recipe_leaves_a_source_out_calibrates_and_resumes(tmp_path, tiny_data):
    """The robust recipe on two sources with one left out, on half the training side's lesions: the
    left-out source is scored as an external test from its own files, never trained on; temperature
    and split are stored (the images left out of training under "unused" and still on the training
    side, so a stage continuing the version draws the same ones); a run stopped after its first epoch
    continues from its work folder."""
    import json

    from melanoma.ml.predict import Predictor
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train
    from melanoma.ml.train_data import prepare

    other = tmp_path / "clinic-b"
    copy_images(other, 3, CLASSES, start=10)  # images the training folder does not hold
    reg = Registry(tmp_path / "models")
    work = tmp_path / "work"
    cfg = TrainConfig(
        data_dirs=(tiny_data, other),
        recipe="robust",
        epochs=1,
        val_fraction=0.3,
        samples_per_epoch=64,
        exclude_sources=("clinic-b",),
        workdir=work,
        train_fraction=0.5,
    )
    first, prepared, _ = train(cfg, reg)
    assert "clinic-b" not in {s.source for s in prepared.train + prepared.val}
    assert {s.source for s in prepared.external} == {"clinic-b"} and len(prepared.external) == 12
    assert set(first.metrics["external"]) == {"clinic-b"} and first.metrics["external"]["clinic-b"]["n"] == 12
    assert first.temperature > 0 and first.metrics["ece"] is not None
    split = json.loads((reg.path(first.version) / "split.json").read_text())
    assert len(split["external"]) == 12 and not set(split["external"]) & set(split["train"])
    trained, unused = {s.image_id for s in prepared.train}, {s.image_id for s in prepared.unused}
    # 7 of each class's 10 on the training side; whole lesions are left out until half is: 4 of 7
    assert len(trained) == 12 and len(unused) == 16 and set(split["unused"]) == unused
    assert set(split["train"]) == trained | unused and not trained & unused
    assert first.data["train_images"] == 12 and "--train-fraction" in first.data["split"]
    stage = prepare(replace(cfg, init_from=first.version, workdir=None), reg)
    assert {s.image_id for s in stage.train} == trained and {s.image_id for s in stage.unused} == unused
    assert stage.val == prepared.val and stage.test == prepared.test
    assert {s.image_id for s in prepare(replace(cfg, init_from=first.version, train_fraction=1.0), reg).train} == (
        trained | unused
    )
    assert "## External test" in (reg.path(first.version) / "MODEL_CARD.md").read_text()
    # Resume: two epochs asked, one already in the work folder's log; only the second runs.
    resumed, _, _ = train(TrainConfig(**{**cfg.__dict__, "epochs": 2, "resume": True}), reg)
    assert resumed.metrics["epochs_run"] == 2
    logged = [json.loads(line) for line in (work / "epochs.jsonl").read_text().splitlines()]
    assert len(logged) == 2
    # The figures a checkpoint can be chosen on, each epoch (the training curves plot them too).
    assert all(0 <= e["val_balanced_accuracy"] <= 1 and 0 <= e["val_melanoma_auc"] <= 1 for e in logged)
    # Resumed once more with nothing left to run (a run stopped while it was evaluating): it publishes.
    again, _, _ = train(TrainConfig(**{**cfg.__dict__, "epochs": 2, "resume": True}), reg)
    assert again.metrics["epochs_run"] == 2 and again.metrics["best_epoch"] in (1, 2)
    p = Predictor(reg, batch_size=4)
    p.load(resumed.version)
    assert p.meta.temperature == resumed.temperature
