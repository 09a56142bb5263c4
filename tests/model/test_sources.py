"""Model behaviour across sources: the shipped model must judge the lesion, not the camera.

Needs ``../shared/data`` (``MELANOMA_TEST_DATA``): the ISIC 2017 images are not shipped in the
repository. Skipped without it; CI has it.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import data
from melanoma.ml.evaluate import roc_auc
from melanoma.versions.registry import Registry
from tests.conftest import DATA

MELANOMA, NEVUS = CLASS_NAMES.index("melanoma"), CLASS_NAMES.index("nevus")
PER_GROUP = 60

pytestmark = pytest.mark.skipif(
    not (DATA / "isic2017").is_dir() or not (DATA / "ham10000").is_dir(),
    reason=f"needs the ISIC 2017 and HAM10000 images in {DATA} (MELANOMA_TEST_DATA)",
)


def _unseen(registry: Registry, version: str) -> set[str] | None:
    """Image ids the version never trained or validated on (its test split and left-out sources)."""
    split = registry.path(version) / "split.json"
    if not split.is_file():
        return None
    sides = json.loads(split.read_text())
    return set(sides.get("test", [])) | set(sides.get("external", []))


def _pick(samples: list[data.Sample], label: str, unseen: set[str] | None, n: int) -> list[data.Sample]:
    chosen = [s for s in samples if s.label == label and (unseen is None or s.image_id in unseen)]
    rng = np.random.default_rng(0)
    return [chosen[i] for i in sorted(rng.choice(len(chosen), size=min(n, len(chosen)), replace=False))]


@pytest.fixture(scope="module")
def p_melanoma(shipped_model_dir):
    """P(melanoma) of the shipped current version for unseen nevi and melanomas of two sources."""
    from melanoma.ml.predict import Predictor

    registry = Registry(shipped_model_dir)
    version = registry.current()
    unseen = _unseen(registry, version)
    ham = data.read_dataset(DATA / "ham10000")
    with open(DATA / "isic2017" / "labels.csv") as fh:
        assert {r["label"] for r in csv.DictReader(fh)} >= {"melanoma", "nevus"}
    isic2017 = data.read_dataset(DATA / "isic2017")
    groups = {
        ("ham10000", "nevus"): _pick(ham, "nevus", unseen, PER_GROUP),
        ("isic2017", "nevus"): _pick(isic2017, "nevus", unseen, PER_GROUP),
        ("ham10000", "melanoma"): _pick(ham, "melanoma", unseen, PER_GROUP // 2),
        ("isic2017", "melanoma"): _pick(isic2017, "melanoma", unseen, PER_GROUP // 2),
    }
    for key, members in groups.items():
        assert len(members) >= 15, f"too few unseen images for {key}: {len(members)}"
    predictor = Predictor(registry, batch_size=32)
    predictor.load(version)
    out = {}
    for key, members in groups.items():
        x, _ = data.load_arrays([s.path for s in members], [s.label_index for s in members], size=predictor.input_size)
        out[key] = predictor.predict(x)[:, MELANOMA]
    return out


def test_source_is_not_separated_better_than_the_diagnosis(p_melanoma):
    """Within nevi, P(melanoma) must not tell the two sources apart better than it tells melanomas
    from nevi.

    Threshold: the source AUC (ISIC 2017 nevi vs HAM10000 nevi, ranked by P(melanoma)) must stay
    within 0.5 ± 0.2, i.e. below what is conventionally called acceptable discrimination (0.7), and
    its distance from chance must be less than half that of the diagnosis AUC (melanomas vs nevi,
    both sources pooled). The shipped model of 2026-11-27 scored 0.24 on ISIC 2017 melanomas vs
    nevi because it ranked every ISIC 2017 nevus above HAM10000's: this test catches that. Every
    version from then until the fifth pretrained stage failed it (the fourth: source AUC 0.671, its
    distance from chance 0.171 against half the diagnosis AUC's 0.167); the fifth passes with source
    AUC 0.637 (0.137 against 0.161), though its ISIC 2017 nevi still get a higher median P(melanoma)
    than HAM10000's (0.039 against 0.013 on these images).
    """
    ham_nv, isic_nv = p_melanoma[("ham10000", "nevus")], p_melanoma[("isic2017", "nevus")]
    mel = np.concatenate([p_melanoma[("ham10000", "melanoma")], p_melanoma[("isic2017", "melanoma")]])
    nv = np.concatenate([ham_nv, isic_nv])
    source_auc = roc_auc(np.r_[np.zeros(len(ham_nv)), np.ones(len(isic_nv))], np.r_[ham_nv, isic_nv])
    diagnosis_auc = roc_auc(np.r_[np.ones(len(mel)), np.zeros(len(nv))], np.r_[mel, nv])
    assert source_auc is not None and diagnosis_auc is not None
    assert abs(source_auc - 0.5) <= 0.2, (
        f"P(melanoma) separates ISIC 2017 nevi from HAM10000 nevi: AUC {source_auc:.3f}"
    )
    assert abs(source_auc - 0.5) < 0.5 * abs(diagnosis_auc - 0.5), (
        f"source AUC {source_auc:.3f} vs diagnosis AUC {diagnosis_auc:.3f}"
    )


def test_melanomas_outrank_nevi_within_each_source(p_melanoma):
    """In each source on its own, melanomas get a higher P(melanoma) than nevi (AUC ≥ 0.7)."""
    for source in ("ham10000", "isic2017"):
        mel, nv = p_melanoma[(source, "melanoma")], p_melanoma[(source, "nevus")]
        auc = roc_auc(np.r_[np.ones(len(mel)), np.zeros(len(nv))], np.r_[mel, nv])
        assert auc is not None and auc >= 0.7, f"{source}: melanoma vs nevus AUC {auc:.3f}"
