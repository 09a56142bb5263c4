"""Per-source evaluation: probabilities already computed are reused, and only the copies other
sources hold are decoded and scored."""

from pathlib import Path

import numpy as np
import pytest

from melanoma.ml import assess, data

IMAGES = Path(__file__).parents[1] / "images"


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(9)(x))


def _samples() -> list[data.Sample]:
    mel = sorted((IMAGES / "melanoma").glob("*.jpg"))
    nev = sorted((IMAGES / "nevus").glob("*.jpg"))
    out = [data.Sample(p, "melanoma", p.stem, source="ham10000") for p in mel[:3]]
    out += [data.Sample(p, "nevus", p.stem, source="isic2017") for p in nev[:3]]
    # One image that a second source holds as a file of its own (here: another file standing in).
    out[0].copies.append((nev[3], "isic-9class"))
    return out


def test_known_probabilities_are_reused_and_only_copies_are_decoded(model, monkeypatch):
    samples = _samples()
    plain, plain_arrays = assess.evaluate_sources(model, samples, 1.5, 0.3, "test")
    x, _ = data.load_arrays([s.path for s in samples], [s.label_index for s in samples], size=(24, 24))
    known = assess.predict_probs(model, x, temperature=1.5)

    decoded: list[Path] = []
    load = data.load_arrays

    def counting(paths, *args, **kwargs):
        decoded.extend(paths)
        return load(paths, *args, **kwargs)

    monkeypatch.setattr(data, "load_arrays", counting)
    reused, reused_arrays = assess.evaluate_sources(model, samples, 1.5, 0.3, "test", known=known)
    assert decoded == [samples[0].copies[0][0]]
    assert sorted(reused) == sorted(plain) == ["ham10000", "isic-9class", "isic2017"]
    for src in plain:
        np.testing.assert_array_equal(reused_arrays[src][0], plain_arrays[src][0])
        np.testing.assert_allclose(reused_arrays[src][1], plain_arrays[src][1], atol=1e-6)
        assert reused[src]["n"] == plain[src]["n"]
        assert reused[src]["accuracy"] == plain[src]["accuracy"]
    # The copy is scored from its own file, not given its sample's probabilities.
    assert not np.allclose(reused_arrays["isic-9class"][1][0], known[0])
