"""A trainer run with a clinic's confirmed cases as a source of their own, end to end: a real worker
scores a site's images, their pathology export is imported, `melanoma train --reviews-site` trains
on them beside a data folder, splits them by image, reports them per source, and the gate compares
the new version with the current one on the site's cases it was not trained on.

Needs ../shared/data/isic2017 (CI has it): its images, with real seborrheic keratoses, stand in for
a clinic's confirmed cases."""

from __future__ import annotations

import json
import shutil

import pytest

from melanoma.versions.registry import Registry
from tests.conftest import DATA, Worker, copy_images, run_cli, service_env, submit, wait_complete

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PER_CLASS = 8


def test_training_on_a_sites_confirmed_cases(tmp_path, redis_url, shipped_model_dir):
    if not (DATA / "isic2017").is_dir():
        pytest.skip(f"needs the ISIC 2017 images at {DATA / 'isic2017'} (set MELANOMA_TEST_DATA; CI has them)")
    clinic = tmp_path / "clinic-x"
    labels = {}
    for cls in ("melanoma", "nevus", "seborrheic keratosis"):
        for src in sorted((DATA / "isic2017" / cls).glob("*.jpg"))[:PER_CLASS]:
            dest = clinic / "2026-11" / src.name  # a clinic's folder: not sorted by diagnosis
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
            labels[str(dest)] = cls
    models = tmp_path / "models"
    shipped = Registry(shipped_model_dir)
    current = shipped.current()
    assert current
    shutil.copytree(shipped.path(current), models / current)
    Registry(models).set_current(current)
    env = service_env(
        tmp_path,
        f"sqlite:///{tmp_path / 'melanoma.db'}",
        redis_url,
        models,
        [clinic],
        MELANOMA_REVIEW_GATE_MIN_CASES="5",
    )
    worker = Worker(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        job = submit(env, clinic, "--site", "clinic-x")
        wait_complete(env, job)
    finally:
        worker.stop()
    export = tmp_path / "pathology.csv"
    export.write_text("image_path,diagnosis,basis\n" + "".join(f"{p},{c},histopathology\n" for p, c in labels.items()))
    r = run_cli(["review", "import", str(export)], env)
    assert r.returncode == 0 and f"{3 * PER_CLASS} diagnoses recorded" in r.stderr, r.stderr

    base = tmp_path / "data" / "train"
    copy_images(base, 4, ["melanoma", "nevus", "basal cell carcinoma"])
    r = run_cli(
        [
            "train",
            "--data",
            str(base),
            "--reviews-site",
            "clinic-x",
            "--recipe",
            "origin",
            "--epochs",
            "1",
            "--augment-per-class",
            "0",
            "--val-fraction",
            "0.3",
            "--model-dir",
            str(models),
        ],
        env,
        timeout=1200,
    )
    assert r.returncode == 0, r.stderr
    version = r.stdout.strip().splitlines()[-1]
    meta = Registry(models).meta(version)
    assert "reviews-clinic-x" in meta.data["sources"] and meta.data["review_cases"] == 3 * PER_CLASS
    counts = meta.data["source_counts"]
    seen = {side: sum(counts[side].get("reviews-clinic-x", {}).values()) for side in ("train", "val")}
    assert seen["train"] > 0 and seen["val"] > 0 and seen["train"] + seen["val"] == 3 * PER_CLASS
    assert counts["train"]["reviews-clinic-x"].get("seborrheic keratosis", 0) > 0
    # Split by image: the content hashes are the ids, on one side each.
    split = json.loads((models / version / "split.json").read_text())
    shas = {s for side in ("train", "val") for s in split[side] if len(s) == 64}
    assert len(shas) == 3 * PER_CLASS and not set(split["train"]) & set(split["val"])
    # Reported per source.
    card = (models / version / "MODEL_CARD.md").read_text()
    assert "reviews-clinic-x" in card
    # Promoting it asks the gate, which compares it with the current version on the site's cases it
    # was not trained on (after training, a barely trained version is refused on validation first).
    r = run_cli(["models", "promote", version, "--model-dir", str(models)], env, timeout=600)
    assert f"site clinic-x ({seen['val']} confirmed cases)" in r.stdout + r.stderr, r.stderr
    r = run_cli(["evaluate", version, "--reviews", "--site", "clinic-x"], env, timeout=600)
    assert r.returncode == 0 and "confirmed cases: 24 (8 melanomas, 0 other)" in r.stdout, r.stderr
    assert "scored now: 24 cases" in r.stdout
