"""Ensembles (melanoma.ml.ensemble): two tiny pretrained versions on one split, combined into one
network whose probabilities are the mean of theirs, published by ``melanoma ensemble`` and scored
by the worker's predictor. Real images from tests/images; no ../shared."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest

from melanoma.core import images
from melanoma.versions.registry import Registry
from tests.conftest import TEST_IMAGES, copy_images, run_cli

pytestmark = pytest.mark.slow  # trains two tiny versions

CLASSES = ["melanoma", "nevus", "basal cell carcinoma", "vascular lesion"]
SIZE = 128


def _softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = np.asarray(z, np.float64) / t
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """A registry with a Lite0 and a Lite1 version at 128 px, the second on the first's split; their
    data folder; and a few real images at that size."""
    from melanoma.ml.recipes import TrainConfig
    from melanoma.ml.train import train

    root = tmp_path_factory.mktemp("ensemble")
    tiny = root / "train"
    copy_images(tiny, 10, CLASSES)
    reg = Registry(root / "models")
    cfg = TrainConfig(
        data_dirs=(tiny,),
        recipe="pretrained",
        epochs=1,
        samples_per_epoch=32,
        train_from_block=15,
        image_size=SIZE,
        val_fraction=0.3,
    )
    first, _, _ = train(cfg, reg)
    second, _, _ = train(replace(cfg, backbone="lite1", train_from_block=19, split_of=first.version), reg)
    paths = [sorted((TEST_IMAGES / c).glob("*.jpg"))[0] for c in CLASSES]
    x = np.stack([images.load(p, (SIZE, SIZE)) for p in paths])
    return reg, tiny, [first, second], x


def test_the_network_gives_the_mean_of_its_members_probabilities(members):
    """One flat graph: softmax of its output is the mean of the members' calibrated probabilities and
    its energy the mean of theirs; it saves and loads, folds its batch normalisation for the worker,
    and takes its familiarity features and Grad-CAM map from the first member."""
    import keras

    from melanoma.ml.ensemble import combine
    from melanoma.ml.explain import last_conv_layer
    from melanoma.ml.familiarity_fit import feature_model
    from melanoma.ml.inference import for_inference

    reg, _, metas, x = members
    nets = [reg.load(m.version) for m in metas]
    temps = [2.0, 0.5]  # far from 1, so that a member's temperature left out would show
    model = combine(nets, temps)
    member_logits = [np.asarray(n(x, training=False)) for n in nets]
    mean = np.mean([_softmax(z, t) for z, t in zip(member_logits, temps)], axis=0)
    out = np.asarray(model(x, training=False))
    np.testing.assert_allclose(_softmax(out), mean, atol=1e-6)
    energy = np.mean([-_logsumexp(z / t) for z, t in zip(member_logits, temps)], axis=0)
    np.testing.assert_allclose(-_logsumexp(out), energy, rtol=1e-5)
    # every layer of both members is the model's own (no nested networks to fold through)
    assert not [
        layer for layer in model.layers if isinstance(layer, keras.Model) and not layer.name.endswith("augmentation")
    ]
    assert len(model.weights) == sum(len(n.weights) for n in nets)

    saved = reg.root / "ensemble-check.keras"
    model.save(saved)
    again = keras.saving.load_model(saved, compile=False)
    np.testing.assert_allclose(_softmax(np.asarray(again(x, training=False))), mean, atol=1e-6)
    folded = for_inference(again)
    assert len(folded.layers) < len(again.layers)  # batch normalisation folded in both members
    np.testing.assert_allclose(_softmax(np.asarray(folded(x, training=False))), mean, atol=1e-4)

    assert last_conv_layer(model).name == last_conv_layer(nets[0]).name
    features = feature_model(model)(x)[0]
    np.testing.assert_allclose(features, feature_model(nets[0])(x)[0], atol=1e-5)

    with pytest.raises(ValueError, match="two or more"):
        combine(nets[:1], temps[:1])


def test_melanoma_ensemble_publishes_a_version_the_worker_scores(members, tmp_path):
    """``melanoma ensemble`` calibrates, evaluates and publishes the pair (promoted: no current
    version); the worker's predictor gives the members' mean at the ensemble's own temperature."""
    from melanoma.ml.predict import Predictor
    from melanoma.ml.train import continue_backbone

    reg, tiny, metas, x = members
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELANOMA_")} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    versions = [m.version for m in metas]
    done = run_cli(["ensemble", *versions, "--data", str(tiny), "--model-dir", str(reg.root)], env, timeout=600)
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    assert "promoted" in done.stderr and reg.current() == version
    meta = reg.meta(version)
    assert meta.architecture == "ensemble" and meta.backbone == "lite0+lite1"
    assert [m["version"] for m in meta.data["members"]] == versions
    assert meta.input_size == [SIZE, SIZE, 3] and meta.temperature > 0
    assert meta.metrics["epochs_run"] == 0 and "test" not in meta.metrics  # the tiny split has no test side
    assert json.loads((reg.path(version) / "split.json").read_text()) == json.loads(
        (reg.path(versions[0]) / "split.json").read_text()
    )
    for name in ("MODEL_CARD.md", "familiarity.npz", "roc_melanoma.png", "reliability.png"):
        assert (reg.path(version) / name).is_file(), name
    assert "members: " + versions[0] in (reg.path(version) / "MODEL_CARD.md").read_text()

    predictor = Predictor(reg, batch_size=4)
    predictor.load(version)
    mean = np.mean([_softmax(np.asarray(reg.load(m.version)(x, training=False)), m.temperature) for m in metas], axis=0)
    np.testing.assert_allclose(predictor.predict(x), _softmax(np.log(mean), meta.temperature), atol=1e-4)

    # A stage cannot continue an ensemble: it continues one of its members.
    from melanoma.ml.recipes import TrainConfig

    with pytest.raises(ValueError, match="is an ensemble"):
        continue_backbone(TrainConfig(data_dirs=(tiny,), recipe="pretrained", init_from=version), meta)

    # What cannot form an ensemble ends in one line and exit status 1.
    leaky = reg.root / "pretrained-20990101T000000-0001"
    shutil.copytree(reg.path(versions[1]), leaky)
    meta_file = leaky / "metadata.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "version": leaky.name}))
    sides = json.loads((leaky / "split.json").read_text())
    sides["train"], sides["val"] = sorted(sides["train"] + sides["val"]), []  # trained on the first's validation
    (leaky / "split.json").write_text(json.dumps(sides))
    for args, message in [
        ([versions[0]], "two or more different versions"),
        ([versions[0], versions[0]], "two or more different versions"),
        ([versions[0], "pretrained-20990101T000000-ffff"], "not found"),
        ([version, versions[0]], "is an ensemble itself"),
        ([versions[0], leaky.name], f"{leaky.name} trained on "),
    ]:
        refused = run_cli(["ensemble", *args, "--data", str(tiny), "--model-dir", str(reg.root)], env, timeout=300)
        assert refused.returncode == 1, (args, refused.stderr)
        assert message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
