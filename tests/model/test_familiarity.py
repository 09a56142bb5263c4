"""Familiarity with the real model: the worker's compiled call agrees with the statistics applied in
numpy, the shipped version flags foreign photos and not dermoscopy, and a version with missing or
broken statistics still scores and says the score is unavailable."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from melanoma.core import images
from melanoma.ml import familiarity, familiarity_fit
from melanoma.ml.predict import Predictor
from melanoma.versions.registry import FAMILIARITY_FILE, Registry
from tests.conftest import TEST_IMAGES

FOREIGN = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "colorwheel")


def _as_worker_decodes(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return images.decode(buf.getvalue(), size)


@pytest.fixture(scope="module")
def current(shipped_model_dir):
    registry = Registry(shipped_model_dir)
    p = Predictor(registry, batch_size=8)
    p.refresh()
    return registry, p


@pytest.fixture(scope="module")
def lesions(current):
    _, p = current
    paths = sorted(q for q in TEST_IMAGES.rglob("*.jpg") if "fullres" not in q.parts)
    return np.stack([images.load(q, p.input_size) for q in paths])


@pytest.fixture(scope="module")
def foreign(current):
    import skimage.data

    _, p = current
    return np.stack([_as_worker_decodes(getattr(skimage.data, n)()[..., :3], p.input_size) for n in FOREIGN])


def test_shipped_version_has_statistics(current):
    registry, p = current
    assert p.familiarity is not None, p.familiarity_note
    model = registry.load(p.version)
    assert p.familiarity.means.shape == (9, int(model.get_layer("logits").input.shape[-1]))
    # The shipped statistics summarise the block the fit picks today: the fifth stage's last, at a
    # sixteenth of the input (block 10 of 16 in Lite0, 14 of 21 in Lite1).
    assert p.familiarity.method == familiarity.DEFAULT_METHOD
    middle = {"lite0": "_blocks.10.add", "lite1": "_blocks.14.add"}[registry.meta(p.version).backbone or "lite0"]
    assert p.familiarity.midlevel_layer == familiarity_fit.middle_layer(model) == middle


def test_worker_call_agrees_with_numpy(current, lesions):
    registry, p = current
    probs, pct = p.assess(lesions[:12])
    np.testing.assert_allclose(probs, p.predict(lesions[:12]), atol=1e-6)
    stats = p.familiarity
    expected = stats.percentile(
        stats.raw(familiarity_fit.outputs(registry.load(p.version), lesions[:12], stats.midlevel_layer))
    )
    # float32 in the compiled call against float64 here: within a rank or two of 1,842.
    np.testing.assert_allclose(pct, expected, atol=0.2)


def test_foreign_photos_are_unfamiliar_and_dermoscopy_is_not(current, lesions, foreign):
    _, p = current
    _, lesion_pct = p.assess(lesions)
    _, foreign_pct = p.assess(foreign)
    colour_fields = np.stack([np.full((*p.input_size, 3), rgb, np.uint8) for rgb in [(0, 0, 0), (233, 196, 170)]])
    _, field_pct = p.assess(colour_fields)
    assert np.all(foreign_pct > 99), dict(zip(FOREIGN, foreign_pct.round(1)))
    assert np.all(field_pct > 99), field_pct
    # Real dermoscopic images like the model's own: about 1 % expected above the 99th percentile.
    assert np.mean(lesion_pct > 99) <= 0.05, np.sort(lesion_pct)[-5:]
    assert 20 < np.median(lesion_pct) < 80  # a percentile of the validation images: about 50 expected


@pytest.mark.parametrize("damage", ["missing", "corrupt", "wrong size", "other layer", "layer size"])
def test_missing_or_broken_statistics_still_score_and_say_why(current, lesions, tmp_path, damage):
    registry, good = current
    shutil.copytree(registry.path(good.version), tmp_path / good.version)
    stats_file = tmp_path / good.version / FAMILIARITY_FILE
    mid_name = familiarity.Familiarity.load(stats_file).midlevel_layer
    if damage == "missing":
        stats_file.unlink()
    elif damage == "corrupt":
        stats_file.write_bytes(stats_file.read_bytes()[:1000])
    else:
        stats = familiarity.Familiarity.load(stats_file)
        if damage == "wrong size":
            stats.classes = familiarity.Gaussian(stats.means[:, :16], stats.classes.whitener[:16, :16])
        elif damage == "other layer":
            stats.info["midlevel_layer"] = "no_such_block"
        else:
            mid = stats.midlevel
            stats.midlevel = familiarity.Gaussian(mid.means[:, :10], mid.whitener[:10, :10])
        stats.save(stats_file)
    Registry(tmp_path).set_current(good.version)
    p = Predictor(Registry(tmp_path), batch_size=8)
    p.refresh()
    probs, pct = p.assess(lesions[:4])
    assert pct is None and p.familiarity is None
    assert p.familiarity_note and p.familiarity_note.startswith(f"familiarity unavailable for {good.version}")
    expected = {
        "missing": "no familiarity statistics",
        "corrupt": "unreadable",
        "wrong size": "16 features",
        "other layer": "'no_such_block', which the model lacks",
        "layer size": f"summarise 10 values of {mid_name!r}, the model gives 224",
    }[damage]
    assert expected in p.familiarity_note
    np.testing.assert_allclose(probs, good.predict(lesions[:4]), atol=1e-6)
