"""Data behaviour on the real ISIC set: duplicates and label conflicts resolved, split leak-free."""

from collections import Counter

import pytest

from melanoma.ml import data, splits


@pytest.fixture(scope="module")
def cleaned(isic_dir):
    samples = data.read_dataset(isic_dir)
    kept, report = data.clean(samples)
    return samples, kept, report


def test_reads_all_nine_classes(cleaned):
    samples, _, _ = cleaned
    assert len(samples) == 2241
    assert min(data.class_counts(samples).values()) > 50  # every one of the nine folders was read


def test_no_duplicate_content_or_id_survives(cleaned):
    _, kept, report = cleaned
    assert max(Counter(s.md5 for s in kept).values()) == 1
    assert max(Counter(s.image_id for s in kept).values()) == 1
    assert report.kept == len(kept) == report.read - len(report.dropped_duplicates) - len(report.dropped_ambiguous)


def test_known_label_conflicts(cleaned, isic_dir):
    _, kept, report = cleaned
    by_id = {s.image_id: s for s in kept}
    # nevus copies of actinic keratoses: HAM10000 says akiec, so they are actinic keratoses
    ak_in_nevus = [s for s in data.read_dataset(isic_dir) if s.label == "nevus" and s.ham_dx == "akiec"]
    assert len(ak_in_nevus) == 76
    assert len(report.relabelled) == 76 + 22  # and 22 'seborrheic keratosis' files ISIC-2017 calls melanoma
    for s in ak_in_nevus:
        assert by_id[s.image_id].label == "actinic keratosis"
    # melanoma/seborrheic-keratosis copies confirmed by ISIC-2017 stay melanoma
    confirmed = [s for s in kept if s.isic2017_melanoma == 1.0]
    assert confirmed and all(s.label == "melanoma" for s in confirmed)
    # the byte-identical "(1)" copies are gone
    assert not any("(1)" in s.path.name for s in kept)
    assert len(report.dropped_ambiguous) == 110  # 55 melanoma/SK pairs that no ground truth settles


def test_split_by_lesion_is_leak_free_and_stratified(cleaned):
    _, kept, _ = cleaned
    train, val = splits.split_by_lesion(kept, 0.2, seed=7)
    assert len(train) + len(val) == len(kept)
    assert not {s.lesion_id for s in train if s.lesion_id} & {s.lesion_id for s in val if s.lesion_id}
    assert not {s.image_id for s in train} & {s.image_id for s in val}
    assert not {s.md5 for s in train} & {s.md5 for s in val}
    counts_v, counts_all = data.class_counts(val), data.class_counts(kept)
    for name, n in counts_all.items():
        if n >= 20:
            assert 0.1 <= counts_v[name] / n <= 0.35, name
    # same seed, same split
    again, _ = splits.split_by_lesion(kept, 0.2, seed=7)
    assert [s.path for s in again] == [s.path for s in train]


def test_ham10000_folders_map_to_nine_classes(isic_dir):
    ham = isic_dir.parent.parent / "ham10000"
    samples = data.read_dataset(ham)
    assert len(samples) == 5928
    assert {s.label for s in samples} == set(data.HAM_DX.values())
    assert all(s.lesion_id and s.lesion_id.startswith("HAM_") for s in samples)
    # 724 images are in both sets under the same id: combining them keeps one copy of each
    both, report = data.clean(data.read_dataset(isic_dir) + samples)
    assert max(Counter(s.image_id for s in both).values()) == 1
    assert len(report.dropped_duplicates) >= 724
