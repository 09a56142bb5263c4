"""Model behaviour: the origin architecture, the shipped model's honesty, the predictor's batching."""

import numpy as np
import pytest

from melanoma import data, images
from melanoma.labels import CLASS_NAMES
from melanoma.registry import Registry
from tests.conftest import TEST_IMAGES


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def test_origin_architecture(keras):
    from melanoma.model import build_origin

    m = build_origin()
    assert m.input_shape == (None, 180, 180, 3)
    assert m.output_shape == (None, 9)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == [
        "Sequential",
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dense",
    ]
    aug = [type(layer).__name__ for layer in m.layers[0].layers]
    assert aug == ["RandomFlip", "RandomRotation", "RandomZoom"]
    convs = [layer for layer in m.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [16, 32, 64]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and c.activation.__name__ == "relu" for c in convs)
    assert m.layers[8].rate == 0.2
    assert m.layers[10].units == 128 and m.layers[10].activation.__name__ == "relu"
    assert m.layers[11].activation.__name__ == "linear"  # logits
    assert m.count_params() == 3_989_801
    assert m.loss.get_config()["from_logits"] is True
    assert type(m.optimizer).__name__ == "Adam"


def test_augmentation_only_in_training(keras):
    from melanoma.model import build_origin

    m = build_origin(seed=1)
    x = np.random.default_rng(0).integers(0, 255, (2, 180, 180, 3)).astype("float32")
    a, b = m(x, training=False).numpy(), m(x, training=False).numpy()
    assert np.array_equal(a, b)
    assert not np.allclose(m(x, training=True).numpy(), a)


@pytest.fixture(scope="module")
def predictor(shipped_model_dir):
    from melanoma.predict import Predictor

    p = Predictor(Registry(shipped_model_dir), batch_size=8)
    p.refresh()
    return p


@pytest.fixture(scope="module")
def some_images():
    paths = [sorted((TEST_IMAGES / c).glob("*.jpg"))[0] for c in CLASS_NAMES if any((TEST_IMAGES / c).glob("*.jpg"))]
    return np.stack([images.load(p) for p in paths])


def test_predictor_probabilities(predictor, some_images):
    probs = predictor.predict(some_images)
    assert probs.shape == (len(some_images), 9)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_padding_and_batch_position_do_not_change_results(predictor, some_images):
    alone = predictor.predict(some_images[:1])
    in_batch = predictor.predict(some_images)[:1]
    np.testing.assert_allclose(alone, in_batch, atol=1e-5)


def test_mixed_precision_keeps_the_answers(predictor, shipped_model_dir, some_images):
    # bfloat16 compute runs on any CPU (fast where it has AVX512-BF16 or AMX); float16 is the
    # GPU's, where it is the same code path. Weights stay float32, outputs are float32.
    from melanoma.predict import Predictor

    mixed = Predictor(Registry(shipped_model_dir), batch_size=8, precision="mixed_bfloat16")
    mixed.refresh()
    assert mixed.version == predictor.version
    a, b = predictor.predict(some_images), mixed.predict(some_images)
    assert b.dtype == np.float32
    np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=1e-5)
    # Measured on 1,024 real images: 98.9 % same top class, |Δp| ≤ 0.05 (README, Performance).
    assert np.abs(a - b).max() < 0.1
    assert not np.array_equal(a, b)  # it really computed in 16 bits
    assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() >= 0.75


def test_predictor_matches_plain_keras_call(predictor, shipped_model_dir, some_images, keras):
    import tensorflow as tf

    reg = Registry(shipped_model_dir)
    model = reg.load(reg.current())
    expected = tf.nn.softmax(model(some_images.astype("float32"), training=False)).numpy()
    np.testing.assert_allclose(predictor.predict(some_images), expected, atol=1e-5)


def test_shipped_metrics_reproduce_on_its_validation_split(shipped_model_dir, isic_dir, predictor):
    """The accuracy in metrics.json is what the model really scores on its held-out lesions."""
    from melanoma import evaluate
    from melanoma.recipes import TrainConfig
    from melanoma.train import prepare

    reg = Registry(shipped_model_dir)
    meta = reg.meta(reg.current())
    cfg = TrainConfig(
        data_dirs=tuple(isic_dir.parent.parent / s for s in meta.data["sources"]),
        val_fraction=meta.data["val_fraction"],
        test_fraction=meta.data.get("test_fraction", 0.0),
        seed=meta.seed,
    )
    val = prepare(cfg).val
    assert len(val) == meta.metrics["n"]
    x, y = data.load_arrays([s.path for s in val], [s.label_index for s in val])
    scores = evaluate.metrics(y, predictor.predict(x))
    assert scores["accuracy"] == pytest.approx(meta.metrics["accuracy"], abs=0.005)
    assert scores["balanced_accuracy"] == pytest.approx(meta.metrics["balanced_accuracy"], abs=0.01)
    assert scores["accuracy"] > 0.35  # far above chance (1/9) on unseen lesions


def test_sample_images_are_held_out_for_the_shipped_model(shipped_model_dir, isic_dir):
    """The demo's samples are test-split images, so the demo shows honest predictions."""
    from melanoma.recipes import TrainConfig
    from melanoma.train import prepare
    from tests.conftest import REPO

    meta = Registry(shipped_model_dir).meta(Registry(shipped_model_dir).current())
    p = prepare(
        TrainConfig(
            data_dirs=tuple(isic_dir.parent.parent / s for s in meta.data["sources"]),
            val_fraction=meta.data["val_fraction"],
            test_fraction=meta.data.get("test_fraction", 0.0),
            seed=meta.seed,
        )
    )
    samples = sorted((REPO / "samples").rglob("*.jpg"))
    assert len(samples) == 18
    test_ids = {s.image_id for s in p.test}
    seen = {s.image_id for s in p.train + p.val}
    for f in samples:
        assert f.stem in test_ids and f.stem not in seen, f
