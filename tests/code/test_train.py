"""Training helpers that need no TensorFlow: mixup, the random streams of a run."""

import numpy as np

from melanoma.ml.fit import _mixup, epoch_draws, stream_seed


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


def test_a_run_that_continues_a_version_draws_other_images_than_the_run_before() -> None:
    """Stages of a fine-tuning chain share the split's seed; each must still draw (and augment) its own
    images, or every stage re-learns the first stage's draws epoch for epoch."""
    probs = np.full(5000, 1 / 5000)
    assert stream_seed(123, None) == 123  # a run from scratch keeps its streams
    child = stream_seed(123, "pretrained-20261204T201733-5e73")
    assert child == stream_seed(123, "pretrained-20261204T201733-5e73")  # a resumed run draws the same
    assert child not in (123, stream_seed(123, "pretrained-20261204T170133-4bd3"), stream_seed(7, None))
    parent, _ = epoch_draws(probs, 2400, 123, 0)
    again, _ = epoch_draws(probs, 2400, 123, 0)
    ours, _ = epoch_draws(probs, 2400, child, 0)
    np.testing.assert_array_equal(parent, again)
    # chance agreement position by position is 1 in 5,000; shared images about 38 % of 2,400 each
    assert np.mean(parent == ours) < 0.01
    assert len(np.intersect1d(parent, ours)) < 0.5 * len(np.unique(parent))
    later, _ = epoch_draws(probs, 2400, child, 1)
    assert np.mean(later == ours) < 0.01
