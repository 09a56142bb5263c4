"""What the model tests share: the shipped current version's predictor and one real image of each
class at its input size (module-scoped: each test module loads its own)."""

import numpy as np
import pytest

from melanoma.core import images
from melanoma.core.labels import CLASS_NAMES
from melanoma.versions.registry import Registry
from tests.conftest import TEST_IMAGES


@pytest.fixture(scope="module")
def predictor(shipped_model_dir):
    """The shipped current version, one plain view at scale 1."""
    from melanoma.ml.predict import Predictor

    p = Predictor(Registry(shipped_model_dir), batch_size=8)
    p.refresh()
    return p


@pytest.fixture(scope="module")
def some_images(predictor):
    """One real image of each class, decoded at the current version's input size."""
    paths = [sorted((TEST_IMAGES / c).glob("*.jpg"))[0] for c in CLASS_NAMES if any((TEST_IMAGES / c).glob("*.jpg"))]
    return np.stack([images.load(p, predictor.input_size) for p in paths])
