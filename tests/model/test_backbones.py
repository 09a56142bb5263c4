"""The pretrained backbone: the numpy reader of PyTorch's legacy files (strides, refused pickle
globals, the package's recorded hash), the Keras EfficientNet-Lite0 with the converted ImageNet
weights (it names scikit-image's photos as ImageNet does), and the fine-tuning model built on it."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
from PIL import Image

from melanoma.ml.backbones.torch_weights import MAGIC_NUMBER, PROTOCOL_VERSION, WeightsError, read_state_dict


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.args = (storage, offset, shape, stride, False, OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


@pytest.fixture
def fake_torch(monkeypatch):
    """Module objects named as torch's, so that pickle writes the globals a real file holds."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: the reader resolves the name itself
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage = float_storage
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return float_storage


def _legacy_file(path, state: dict, storages: list[_Storage], float_storage) -> None:
    """Write ``state`` as torch.save's legacy format does."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", float_storage, obj.key, "cpu", obj.data.size)
            return None

    buf = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    Pickler(buf, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size))
        buf.write(s.data.astype("<f4").tobytes())
    path.write_bytes(buf.getvalue())


def test_tensors_honour_their_saved_strides_and_offsets(tmp_path, fake_torch):
    """A conv kernel saved as a permuted view of its storage (as many in the real file are) comes
    back in its logical layout; reading the storage as contiguous would scramble it."""
    logical = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    # Stored channels-last, the tensor a permuted view of it: strides (12, 1, 6, 3).
    stored = _Storage("0", np.ascontiguousarray(logical.transpose(0, 2, 3, 1)).reshape(-1))
    shifted = _Storage("1", np.concatenate([np.full(5, -1, np.float32), np.arange(4, dtype=np.float32)]))
    state = OrderedDict(
        conv=_Tensor(stored, 0, (2, 3, 2, 2), (12, 1, 6, 3)),
        bias=_Tensor(shifted, 5, (4,), (1,)),
        transposed=_Tensor(shifted, 5, (2, 2), (1, 2)),
    )
    path = tmp_path / "weights.pth"
    _legacy_file(path, state, [stored, shifted], fake_torch)
    out = read_state_dict(path)
    np.testing.assert_array_equal(out["conv"], logical)
    np.testing.assert_array_equal(out["bias"], [0, 1, 2, 3])
    np.testing.assert_array_equal(out["transposed"], [[0, 2], [1, 3]])
    assert not np.array_equal(stored.data[:24].reshape(2, 3, 2, 2), logical)  # contiguous reading would be wrong


def test_a_pickled_global_other_than_a_tensor_is_refused(tmp_path, fake_torch):
    """Reading a pickle runs code: a file that names any other global (here os.system) is refused
    before anything runs."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    _legacy_file(path, OrderedDict(weight=Evil()), [], fake_torch)
    with pytest.raises(WeightsError, match=r"refusing to load (posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()


def test_a_truncated_or_foreign_file_is_a_weights_error(tmp_path, fake_torch):
    stored = _Storage("0", np.arange(8, dtype=np.float32))
    path = tmp_path / "w.pth"
    _legacy_file(path, OrderedDict(w=_Tensor(stored, 0, (8,), (1,))), [stored], fake_torch)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(WeightsError, match="truncated"):
        read_state_dict(path)
    path.write_bytes(b"PK\x03\x04 a zip-format torch file or anything else")
    with pytest.raises(WeightsError):
        read_state_dict(path)


def test_the_package_file_is_checked_against_its_recorded_hash(tmp_path):
    from melanoma.ml import backbones

    distribution, _, relative = backbones.PACKAGES["lite0"]
    path = backbones.weights_file("lite0")  # verified on the way
    assert path.stat().st_size > 10_000_000
    changed = tmp_path / path.name
    data = path.read_bytes()
    changed.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte of the last weight
    with pytest.raises(WeightsError, match="does not match the hash"):
        backbones.verify(changed, distribution, relative)
    with pytest.raises(WeightsError, match="records no sha256"):
        backbones.verify(path, distribution, "models/no-such-file.pth")


@pytest.fixture(scope="module", params=[("lite0", 99), ("lite1", 129), ("lite2", 129)], ids=lambda p: p[0])
def imagenet(request, tmp_path_factory):
    """Each published EfficientNet-Lite as its ImageNet classifier, with its converted weights."""
    from melanoma.ml import backbones
    from melanoma.ml.backbones import efficientnet_lite as lite

    variant, tensors = request.param
    model = lite.imagenet_classifier(variant)
    weights = backbones.imagenet_weights(variant, tmp_path_factory.mktemp("cache"))
    assert lite.assign(model, weights, include_classifier=True) == len(weights) == tensors
    return model


@pytest.mark.parametrize(("photo", "imagenet_class"), [("chelsea", 285), ("coffee", 967), ("rocket", 657)])
def test_the_converted_network_names_photos_as_imagenet_does(imagenet, photo, imagenet_class):
    """scikit-image's bundled photos, centre square crop at the network's own input size: Egyptian
    cat, espresso, missile."""
    import skimage.data

    img = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
    w, h = img.size
    s = min(w, h)
    size = imagenet.input_shape[1]
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size))
    logits = imagenet.predict(np.asarray(img, np.float32)[None], verbose=0)[0]
    assert int(np.argmax(logits)) == imagenet_class


def test_the_cache_gives_the_converted_weights_back(tmp_path):
    from melanoma.ml import backbones

    first = backbones.imagenet_weights("lite0", tmp_path)
    (cached,) = tmp_path.glob("efficientnet-lite0-*.npz")
    again = backbones.imagenet_weights("lite0", tmp_path)
    assert list(first) == list(again) or sorted(first) == sorted(again)
    for name in first:
        for a, b in zip(first[name], again[name], strict=True):
            np.testing.assert_array_equal(a, b)
    assert cached.stat().st_size > 10_000_000


@pytest.mark.parametrize(
    ("backbone", "image_size", "size", "norms"),
    [("lite0", None, 224, 49), ("lite1", None, 240, 64), ("lite2", 300, 300, 64)],
)
def test_the_pretrained_model_runs_as_the_worker_runs_it(backbone, image_size, size, norms):
    """The fine-tuning model starts from the ImageNet backbone, at the backbone's own input size or
    the one asked for; the worker's inference copy folds every batch normalisation (depthwise
    convolutions too) and gives the same logits."""
    import keras

    from melanoma.ml.inference import for_inference
    from melanoma.ml.model import build, input_size
    from tests.conftest import TEST_IMAGES

    model = build("pretrained", 3, backbone, image_size)
    assert model.input_shape[1:3] == input_size("pretrained", backbone, image_size) == (size, size)
    from melanoma.core import images

    x = np.stack([images.load(f, (size, size)) for f in sorted(TEST_IMAGES.rglob("*.jpg"))[:8]])
    fast = for_inference(model)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == norms
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in fast.layers)
    np.testing.assert_allclose(fast.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-3)


def test_a_saved_network_tells_its_backbone(tmp_path, shipped_model_dir):
    """What a stage continuing a version builds when the version did not record its backbone."""
    from melanoma.ml.backbones.layout import saved_variant
    from melanoma.ml.model import build_pretrained
    from melanoma.versions.registry import MODEL_FILE

    for name in ("lite1", "lite2"):
        build_pretrained(backbone=name, image_size=96).save(tmp_path / f"{name}.keras")
        assert saved_variant(tmp_path / f"{name}.keras") == name
    assert saved_variant(shipped_model_dir / "pretrained-20261204T201733-5e73" / MODEL_FILE) == "lite0"
    assert saved_variant(shipped_model_dir / "pretrained-20261206T075144-596d" / MODEL_FILE) == "lite1"
    assert saved_variant(shipped_model_dir / "origin-20261127T153542-084e" / MODEL_FILE) is None
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    assert saved_variant(tmp_path / "broken.keras") is None
