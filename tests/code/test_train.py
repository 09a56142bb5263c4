"""Training helpers that need no TensorFlow: mixup, the random streams of a run, what each epoch
draws."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from melanoma.ml import data, splits
from melanoma.ml.fit import _mixup, _training_set, epoch_draws, stream_seed
from melanoma.ml.recipes import TrainConfig
from melanoma.ml.train_data import Prepared
from tests.conftest import TEST_IMAGES


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


def _ham_folder(root: Path) -> Path:
    """A HAM10000-style folder of real test images: six nevi confirmed by follow-up, two by
    histopathology, two melanomas; ``metadata.csv`` records how each was confirmed."""
    rows = ["image_id,lesion_id,dx,dx_type,age,sex,localization"]
    kinds = [("nv", "nevus", "follow_up")] * 6 + [("nv", "nevus", "histo")] * 2 + [("mel", "melanoma", "histo")] * 2
    for i, (dx, label, how) in enumerate(kinds):
        src = sorted((TEST_IMAGES / label).glob("*.jpg"))[i % 2]
        (root / dx).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / dx / f"ISIC_{9000000 + i}.jpg")
        rows.append(f"ISIC_{9000000 + i},HAM_{i},{dx},{how},50.0,male,back")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_follow_up_nevi_are_drawn_less_and_every_class_and_source_keeps_its_share(tmp_path) -> None:
    """``--follow-up-weight``: HAM10000's nevi confirmed by follow-up are drawn at that fraction of its
    other nevi's rate; each (source, class) cell keeps the share the source-conditioned sampling gave
    it, so the class balance and the sources' shares are those of a run without it."""
    ham = data.read_dataset(_ham_folder(tmp_path / "ham10000"))
    assert [s.confirmed_by for s in ham] == ["histo"] * 2 + ["follow_up"] * 6 + ["histo"] * 2  # mel, then nv
    other = [
        data.Sample(path=tmp_path / f"o{i}.jpg", label=label, image_id=f"o{i}", source="isic-9class")
        for i, label in enumerate(["nevus", "nevus", "melanoma"])
    ]
    train = ham + other
    base = splits.sampling_weights(train, 0.5, 0.5)

    def drawn(weight: float | None) -> tuple[np.ndarray, dict]:
        recipe = TrainConfig(data_dirs=(tmp_path,), recipe="pretrained", follow_up_weight=weight).resolved()
        prepared = Prepared(train=list(train), val=[], test=[])
        _, probs, _ = _training_set(recipe, prepared, tmp_path / "scratch", 0)
        assert probs is not None
        return probs, prepared.info["sampling"]

    probs, info = drawn(None)
    np.testing.assert_array_equal(probs, base)
    assert "follow_up_weight" not in info

    probs, info = drawn(0.25)
    follow_up = np.asarray([s.confirmed_by == "follow_up" for s in train])
    histo_nevi = np.asarray([s.confirmed_by == "histo" and s.label == "nevus" for s in train])
    np.testing.assert_allclose(probs[follow_up], 0.25 * probs[histo_nevi][0])
    for source, label in {(s.source, s.label) for s in train}:
        cell = np.asarray([(s.source, s.label) == (source, label) for s in train])
        assert probs[cell].sum() == pytest.approx(base[cell].sum())
    cell = np.asarray([s.source == "ham10000" and s.label == "nevus" for s in train])
    assert probs[follow_up].sum() / probs[cell].sum() == pytest.approx(6 * 0.25 / (6 * 0.25 + 2))
    assert info["follow_up_weight"] == 0.25
    assert info["follow_up_nevi_share"] == pytest.approx([base[follow_up].sum(), probs[follow_up].sum()])

    # A cell of follow-up nevi only keeps its draws, whatever the weight; 0 never draws them beside others.
    only = [s for s in train if s.confirmed_by != "histo" or s.label != "nevus"]
    w = splits.sampling_weights(only, 0.5, 0.5)
    mask = np.asarray([s.confirmed_by == "follow_up" for s in only], dtype=float)
    np.testing.assert_allclose(splits.reweighted_within_cells(only, w, np.where(mask, 0.0, 1.0)), w)
    assert drawn(0.0)[0][follow_up].sum() == 0


def test_follow_up_weight_needs_a_recipe_that_samples() -> None:
    with pytest.raises(ValueError, match="--follow-up-weight: recipe origin does not sample its images"):
        TrainConfig(data_dirs=(Path("."),), recipe="origin", follow_up_weight=0.5)
