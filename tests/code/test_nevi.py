"""bench.nevi's grouping and figures: HAM10000 nevi by how they were confirmed, the pooled HAM10000
row the issue compares with, and how P(melanoma) tells ISIC 2017's nevi from each kind."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.nevi import group_of, melanoma_aucs, summarise, unseen
from melanoma.ml import data
from tests.conftest import TEST_IMAGES


def _sample(image_id: str, source: str, label: str = "nevus", confirmed_by: str | None = None) -> data.Sample:
    return data.Sample(
        path=Path(f"/x/{image_id}.jpg"), label=label, image_id=image_id, source=source, confirmed_by=confirmed_by
    )


def test_a_ham10000_nevus_is_grouped_by_how_it_was_confirmed(tmp_path):
    """The kind comes from the folder's metadata (``dx_type``, read with the images); another
    source's nevi are grouped by source alone."""
    (tmp_path / "nv").mkdir()
    shutil.copy(sorted((TEST_IMAGES / "nevus").glob("*.jpg"))[0], tmp_path / "nv" / "ISIC_1.jpg")
    shutil.copy(sorted((TEST_IMAGES / "nevus").glob("*.jpg"))[1], tmp_path / "nv" / "ISIC_2.jpg")
    (tmp_path / "metadata.csv").write_text("lesion_id,image_id,dx,dx_type\nHAM_1,ISIC_1,nv,histo\n")
    read = [replace(s, source="ham10000") for s in data.read_dataset(tmp_path)]
    assert [group_of(s) for s in read] == ["ham10000 (histo)", "ham10000 (unknown)"]
    assert group_of(_sample("ISIC_1", "isic2017", confirmed_by="histo")) == "isic2017"


def test_unseen_images_are_the_test_split_and_the_left_out_images():
    kept = [_sample("a", "ham10000"), _sample("b", "ham10000"), _sample("c", "isic2017")]
    kept += [_sample("d", "isic2017", "melanoma"), _sample("e", "ham10000", "melanoma")]
    split = {"train": ["a", "e"], "test": ["b", "d"], "external": ["c"]}
    assert [s.image_id for s in unseen(kept, split)] == ["b", "c"]
    assert [s.image_id for s in unseen(kept, split, "melanoma")] == ["d"]


def test_summary_per_group_pooled_ham_and_isic2017_against_each_kind():
    groups = ["ham10000 (follow_up)"] * 6 + ["ham10000 (histo)"] * 4 + ["isic2017"] * 5
    p = np.array([0.01, 0.02, 0.01, 0.03, 0.02, 0.01] + [0.3, 0.5, 0.4, 0.2] + [0.05, 0.1, 0.25, 0.35, 0.06])
    got = summarise(groups, p, threshold=0.1)
    rows = got["groups"]
    assert set(rows) == {"ham10000 (follow_up)", "ham10000 (histo)", "ham10000 (all)", "isic2017"}
    assert rows["ham10000 (all)"]["nevi"] == 10 and rows["ham10000 (all)"]["median_p_melanoma"] == np.median(p[:10])
    assert rows["isic2017"]["median_p_melanoma"] == 0.1 and rows["isic2017"]["flagged"] == 3
    lo, hi = rows["ham10000 (histo)"]["median_ci95"]
    assert 0.2 <= lo <= 0.35 <= hi <= 0.5
    # Every ISIC 2017 nevus above every follow-up one; against the excised ones, 3 of 20 pairs.
    assert got["isic2017_against"]["ham10000 (follow_up)"] == 1.0
    assert np.isclose(got["isic2017_against"]["ham10000 (histo)"], 3 / 20)
    assert "isic2017" not in got["isic2017_against"]
    none = summarise(groups, p, threshold=None)["groups"]["isic2017"]
    assert none["flagged"] is None and none["flagged_ci95"] is None


def test_melanoma_auc_against_each_sources_own_nevi_and_each_ham10000_kind():
    """HAM10000 melanomas rank above every follow-up nevus and below some excised ones; ISIC 2017's
    melanomas are compared with ISIC 2017's nevi only."""
    nevi = [("ham10000", "follow_up")] * 4 + [("ham10000", "histo")] * 4 + [("isic2017", None)] * 4
    p_nev = np.array([0.01, 0.02, 0.03, 0.04] + [0.2, 0.5, 0.7, 0.9] + [0.1, 0.2, 0.3, 0.4])
    melanomas = ["ham10000"] * 2 + ["isic2017"] * 2
    p_mel = np.array([0.6, 0.8, 0.35, 0.05])
    got = melanoma_aucs(melanomas, p_mel, nevi, p_nev)
    assert set(got) == {"ham10000: all nevi", "ham10000: follow_up nevi", "ham10000: histo nevi", "isic2017: all nevi"}
    assert got["ham10000: follow_up nevi"]["auc"] == 1.0
    assert np.isclose(got["ham10000: histo nevi"]["auc"], 5 / 8)  # 0.6 beats 0.2, 0.5; 0.8 beats 0.2, 0.5, 0.7
    assert np.isclose(got["ham10000: all nevi"]["auc"], 13 / 16)
    assert np.isclose(got["isic2017: all nevi"]["auc"], 3 / 8)
    assert (got["isic2017: all nevi"]["melanomas"], got["isic2017: all nevi"]["nevi"]) == (2, 4)
    lo, hi = got["ham10000: all nevi"]["ci95"]
    assert lo <= 13 / 16 <= hi
