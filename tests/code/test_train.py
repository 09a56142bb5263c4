"""Training helpers that need no TensorFlow: mixup."""

import numpy as np

from melanoma.ml.fit import _mixup


def test_mixup_blends_images_and_targets_with_the_same_weight() -> None:
    rng = np.random.default_rng(0)
    images = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 100, 200, 250)])
    targets = np.eye(9, dtype=np.float32)[[0, 3, 4, 6]]
    mixed, soft = _mixup(images, targets, rng, alpha=0.4)
    assert mixed.dtype == np.uint8 and mixed.shape == images.shape
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(len(images)):
        lam = soft[i].max()
        assert lam >= 0.5  # the image's own label dominates
        own = int(np.argmax(targets[i]))
        assert soft[i, own] == lam or lam == 0.5
        # the pixel value is the same blend as the target (to rounding)
    assert (soft.max(axis=1) < 0.99).any()  # something was actually blended
    values = np.array([0, 100, 200, 250], np.float32)
    expected = soft @ np.array([values[0], 0, 0, values[1], values[2], 0, values[3], 0, 0], np.float32)
    np.testing.assert_allclose(mixed[:, 0, 0, 0], expected, atol=0.51)
