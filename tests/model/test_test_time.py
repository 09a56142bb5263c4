"""Test-time augmentation: flipped views (MELANOMA_TTA) and a second scale (MELANOMA_TTA_SCALES)
average what the plain predictor gives on those very images; a network of fixed input size says so
and is scored at scale 1."""

import numpy as np
import pytest

from melanoma.core import images
from melanoma.versions.registry import Registry
from tests.conftest import TEST_IMAGES


@pytest.fixture(scope="module")
def registry(shipped_model_dir):
    return Registry(shipped_model_dir)


def test_four_views_average_the_flipped_images(registry, predictor, some_images):
    from melanoma.ml.predict import Predictor

    four = Predictor(registry, batch_size=8, tta=4)
    four.refresh()
    flips = [some_images, some_images[:, :, ::-1], some_images[:, ::-1], some_images[:, ::-1, ::-1]]
    expected = np.mean([predictor.predict(np.ascontiguousarray(f)) for f in flips], axis=0)
    np.testing.assert_allclose(four.predict(some_images), expected, atol=1e-5)


def test_a_second_scale_averages_the_enlarged_image(registry, predictor, some_images):
    import tensorflow as tf

    from melanoma.ml.inference import at_size, for_inference
    from melanoma.ml.predict import Predictor

    version = registry.current()
    if registry.meta(version).architecture == "origin":
        pytest.skip("the current version's network takes one input size")
    two = Predictor(registry, batch_size=8, scales=(1.18, 1))
    two.refresh()
    assert two.scales == (1.0, 1.18) and two.scales_note is None
    h, w = predictor.input_size
    size = (round(h * 1.18), round(w * 1.18))
    enlarged = tf.image.resize(tf.constant(some_images, tf.float32), size, method="bilinear")
    logits = for_inference(at_size(registry.load(version), size))(enlarged, training=False)
    scaled = tf.nn.softmax(logits / registry.meta(version).temperature).numpy()
    got = two.predict(some_images)
    np.testing.assert_allclose(got, (predictor.predict(some_images) + scaled) / 2, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - predictor.predict(some_images)).max() > 1e-3  # the second scale really counted


def test_a_fixed_size_network_is_scored_at_scale_one(registry):
    from melanoma.ml.predict import Predictor

    origin = next(m.version for m in registry.versions() if m.architecture == "origin")
    one, two = Predictor(registry, batch_size=8), Predictor(registry, batch_size=8, scales=(1, 1.5))
    one.load(origin)
    two.load(origin)
    assert two.scales_note is not None and "scored at scale 1 alone" in two.scales_note
    assert "\n" not in two.scales_note
    x = np.stack([images.load(p, two.input_size) for p in sorted(TEST_IMAGES.rglob("*.jpg"))[:4]])
    np.testing.assert_array_equal(two.predict(x), one.predict(x))


@pytest.mark.parametrize("scales", [(1.18,), (1, 3.0), (0.2, 1)])
def test_scales_must_include_one_and_stay_in_range(registry, scales):
    from melanoma.ml.predict import Predictor

    with pytest.raises(ValueError, match="scales must include 1"):
        Predictor(registry, scales=scales)
