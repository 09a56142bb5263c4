"""The promotion gate's decisions: the per-source figure, and the branches where there is nothing to
compare with (an unusable current version, no validation data). Real shipped versions, real images."""

from __future__ import annotations

import json
import shutil

import numpy as np

from melanoma.core import images
from melanoma.core.decision import predicted_classes
from melanoma.core.labels import CLASS_NAMES
from melanoma.lifecycle.promotion import _score, compare, gate
from melanoma.ml.evaluate import MIN_SOURCE_IMAGES
from melanoma.versions.registry import Registry
from tests.conftest import TEST_IMAGES


def _one_hot(labels: list[int]) -> np.ndarray:
    return np.eye(len(CLASS_NAMES))[labels] * 0.9 + 0.1 / len(CLASS_NAMES)


def _figure(y: np.ndarray, probs: np.ndarray, sources: list[str] | None) -> tuple[float, str]:
    return _score(y, predicted_classes(probs, None), sources)


def test_a_version_that_gains_on_one_source_and_loses_on_another_scores_lower():
    """Two sources of MIN_SOURCE_IMAGES images, two classes each. The 'shortcut' version is right on
    every image of the big source and guesses one class on the small one; the 'lesion' version is
    right on 80 % of each. Pooled, the shortcut looks better; per source, it is worse."""
    n = MIN_SOURCE_IMAGES
    big, small = [0, 4] * (3 * n // 2), [0, 4] * (n // 2)
    y = np.asarray(big + small)
    sources = ["big"] * len(big) + ["small"] * len(small)
    shortcut = _one_hot(big + [4] * len(small))
    lesion_labels = [label if i % 5 else 4 - label for i, label in enumerate(big + small)]
    lesion = _one_hot(lesion_labels)
    pooled_short, _ = _figure(y, shortcut, None)
    pooled_lesion, _ = _figure(y, lesion, None)
    per_short, detail = _figure(y, shortcut, sources)
    per_lesion, _ = _figure(y, lesion, sources)
    assert pooled_short > pooled_lesion
    assert per_short < per_lesion
    assert detail.startswith("mean balanced accuracy over sources (big 1.000, small 0.500)")
    # A source with too few images does not count: one source left, the pooled figure again.
    few = ["big"] * len(big) + ["small"] * (len(small) - 1) + ["tiny"]
    assert _figure(y, shortcut, few)[1] == "balanced accuracy"
    assert _figure(y, shortcut, ["big"] * len(y))[1] == "balanced accuracy"


def test_a_version_as_good_on_the_figure_but_ranking_melanomas_worse_is_refused():
    """Both versions give every image its class (the same gate figure); the new one gives each
    nevus more P(melanoma) than any melanoma gets: the figure cannot see it, the melanoma AUC does."""
    mel, nev = CLASS_NAMES.index("melanoma"), CLASS_NAMES.index("nevus")
    y = np.asarray([mel] * 20 + [nev] * 40)
    current = _one_hot(list(y))
    worse = np.full((len(y), len(CLASS_NAMES)), 0.65 / (len(CLASS_NAMES) - 1))
    worse[y == mel, mel] = 0.35  # still the most probable class of each melanoma
    worse[y == nev] = 0.0
    worse[y == nev, nev], worse[y == nev, mel] = 0.6, 0.4
    assert _figure(y, worse, None) == _figure(y, current, None)
    passed, why, new_score, old_score = compare(y, (worse, None), (current, None), None)
    assert not passed and why.startswith("melanoma AUC 0.0000, below the current version's 1.0000")
    assert "change -1.0000, paired 95 % interval -1.0000 to -1.0000: worse beyond what another draw" in why
    assert (new_score, old_score) == (_figure(y, worse, None)[0], _figure(y, current, None)[0])
    passed, why, _, _ = compare(y, (current, None), (current, None), None)
    same = "(change +0.0000, paired 95 % interval +0.0000 to +0.0000: a change these cases cannot tell from none)"
    assert passed and why.endswith(f"melanoma AUC 1.0000 ≥ 1.0000 {same}")
    # The figure comes first: a version worse on it is refused for that.
    guess_nevus = _one_hot([nev] * len(y))
    passed, why, _, _ = compare(y, (guess_nevus, None), (current, None), None)
    assert not passed and why.startswith("balanced accuracy: 0.5000, below")


def test_a_refusal_says_whether_the_validation_images_can_tell_the_change_from_none():
    """The rule stays strict, but a refusal reads the change against a paired bootstrap interval: a
    version one image lower on the figure, or with two melanomas ranked a little lower, is refused
    as a change these cases cannot tell from none; one wrong on a fifth of each class is worse
    beyond the draw."""
    rng = np.random.default_rng(3)
    mel, nev, bcc = (CLASS_NAMES.index(c) for c in ("melanoma", "nevus", "basal cell carcinoma"))
    y = np.asarray([mel] * 60 + [nev] * 200 + [bcc] * 60)
    current = _one_hot(list(y))  # every class right; P(melanoma) ranks melanomas with overlap (AUC about 0.9)
    current[:, mel] = np.clip(0.25 * (y == mel) + rng.normal(0.35, 0.15, len(y)), 0.05, 0.9)
    one_wrong = current.copy()
    i = np.flatnonzero(y == bcc)[0]
    one_wrong[i] = _one_hot([nev])[0]
    passed, why, new_score, old_score = compare(y, (one_wrong, None), (current, None), None)
    assert not passed and new_score < old_score
    lo, hi = (float(v) for v in why.split("paired 95 % interval ")[1].split(":")[0].split(" to "))
    assert lo < new_score - old_score < 0 <= hi
    assert why.endswith("a change these cases cannot tell from none)")

    lower = current.copy()
    top = np.flatnonzero(y == mel)[np.argsort(current[y == mel, mel])[-2:]]
    lower[top, mel] = np.sort(current[y == nev, mel])[-3]  # two melanomas fall below a few nevi
    passed, why, _, _ = compare(y, (lower, None), (current, None), None)
    assert not passed and why.startswith("melanoma AUC") and "cannot tell from none" in why

    fifth_wrong = current.copy()
    for c, other in ((mel, nev), (nev, bcc), (bcc, mel)):
        rows = np.flatnonzero(y == c)[: int((y == c).sum()) // 5]
        fifth_wrong[rows] = _one_hot([other])[0]
    passed, why, _, _ = compare(y, (fifth_wrong, None), (current, None), None)
    assert not passed and why.startswith("balanced accuracy") and "worse beyond what another draw" in why


def test_the_figure_interval_keeps_every_source_in_every_resample():
    """A small source of exactly MIN_SOURCE_IMAGES images where the new version is right and the
    current one guesses one class; the big source alike for both. Resampled freely, about half the
    resamples would hold the small source under the minimum and drop it (a change of 0); resampled
    within each source, every resample counts it, and the change is +0.25 in each."""
    n = MIN_SOURCE_IMAGES
    big, small = [0, 4] * (3 * n // 2), [0, 4] * (n // 2)
    y = np.asarray(big + small)
    sources = ["big"] * len(big) + ["small"] * len(small)
    current = _one_hot(big + [4] * len(small))
    new = _one_hot(big + small)
    passed, why, new_score, old_score = compare(y, (new, None), (current, None), sources)
    assert passed and new_score - old_score == 0.25
    assert "(change +0.2500, paired 95 % interval +0.2500 to +0.2500: better beyond" in why


def _copy(src: Registry, dst: Registry, version: str, new_id: str) -> None:
    shutil.copytree(src.path(version), dst.path(new_id))
    meta = json.loads((dst.path(new_id) / "metadata.json").read_text())
    meta["version"] = new_id
    (dst.path(new_id) / "metadata.json").write_text(json.dumps(meta))


def test_gate_without_validation_data_or_with_an_unusable_current_version(tmp_path, shipped_model_dir):
    shipped = Registry(shipped_model_dir)
    reg = Registry(tmp_path / "models")
    reg.root.mkdir(parents=True, exist_ok=True)
    _copy(shipped, reg, shipped.current(), "good-1")
    _copy(shipped, reg, shipped.current(), "good-2")
    _copy(shipped, reg, shipped.current(), "good-3")

    first = gate(reg, "good-1")
    assert first.promoted and first.reason == "no current version" and reg.current() == "good-1"
    r = gate(reg, "good-2")  # nothing to compare on
    assert r.promoted and "no validation data" in r.reason and reg.current() == "good-2"

    (reg.path("good-2") / "model.keras").write_bytes(b"PK\x03\x04 not a model any more")
    files = sorted(TEST_IMAGES.rglob("*.jpg"))[:8]
    x = np.stack([images.load(f) for f in files])
    y = np.asarray([CLASS_NAMES.index(f.parent.name) for f in files])
    r = gate(reg, "good-3", x, y)
    assert r.promoted and r.reason.startswith("current version good-2 is unusable") and r.new_score is not None
    assert reg.current() == "good-3"
    assert [e["reason"] for e in reg.history()][-3:] == [
        "gate: no current version",
        "gate: loads and predicts valid probabilities (no validation data to compare on)",
        "gate: " + r.reason,
    ]


def test_promoting_by_force_is_instant_and_loads_no_tensorflow(tmp_path, shipped_model_dir):
    """`models promote --force` mid-job must take effect at once: it neither checks the version nor
    imports TensorFlow (seconds, during which a running job would finish on the old version)."""
    import subprocess
    import sys

    reg = Registry(tmp_path / "models")
    reg.root.mkdir(parents=True, exist_ok=True)
    shipped = Registry(shipped_model_dir)
    _copy(shipped, reg, shipped.current(), "good-1")
    code = (
        "import sys\n"
        "from melanoma.lifecycle.promotion import gate\n"
        "from melanoma.versions.registry import Registry\n"
        f"r = gate(Registry({str(reg.root)!r}), 'good-1', force=True)\n"
        "assert r.promoted and r.reason == 'forced'\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
    assert reg.current() == "good-1"
