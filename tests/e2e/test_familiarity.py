"""A job of foreign photos among dermoscopic images, end to end through the real worker with the
shipped version: every row has its familiarity, the photos are flagged, the job warns, the
results filter on it and the worker counts it in Prometheus."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from melanoma.versions.registry import Registry
from tests.conftest import copy_images, free_port, results_csv, run_cli, service_env, submit, wait_complete

pytestmark = pytest.mark.e2e

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def write_photos(folder: Path) -> list[Path]:
    """scikit-image's bundled photos as JPEG files, as a clinic's export might mix them in."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()[..., :3]).save(path, "JPEG", quality=92)
        out.append(path)
    return out


def test_foreign_photos_are_flagged_and_the_job_warns(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    folder = tmp_path / "clinic"
    lesions = copy_images(folder / "dermoscopy", 3, ["melanoma", "nevus"])
    photos = write_photos(folder / "holiday")
    port = free_port()
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder], MELANOMA_METRICS_PORT=str(port))
    start_worker(env)
    job = submit(env, folder)
    st = wait_complete(env, job, timeout=240)

    rows = {Path(r["image_path"]).name: r for r in results_csv(env, job)}
    assert all(r["status"] == "ok" and r["familiarity"] != "" for r in rows.values())
    for p in photos:
        assert float(rows[p.name]["familiarity"]) > 99 and rows[p.name]["unfamiliar"] == "1", rows[p.name]
    lesion_flags = [rows[p.name]["unfamiliar"] for p in lesions]
    assert lesion_flags.count("1") <= 1, lesion_flags  # real dermoscopy: about 1 in 100 expected

    n_unfamiliar = len(photos) + lesion_flags.count("1")
    assert (st["measured"], st["unfamiliar"]) == (len(rows), n_unfamiliar)
    share = n_unfamiliar / len(rows)
    assert st["warning"] == (
        f"{share:.0%} of these images look unlike the images this model was validated on "
        f"({n_unfamiliar} of {len(rows)}): expect lower accuracy"
    )
    table = run_cli(["status", job], env)
    assert f"WARNING  {share:.0%} of these images look unlike" in table.stdout, table.stdout
    # A higher warning share from the settings: the same job no longer warns.
    quiet = run_cli(["status", job, "--format", "json"], dict(env, MELANOMA_UNFAMILIAR_WARN_SHARE="0.9"))
    assert json.loads(quiet.stdout)["warning"] is None

    only = run_cli(["results", job, "--unfamiliar", "--format", "json"], env)
    assert only.returncode == 0, only.stderr
    assert {Path(r["image_path"]).name for r in json.loads(only.stdout)} == {
        name for name, r in rows.items() if r["unfamiliar"] == "1"
    }

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    version = Registry(shipped_model_dir).current()
    found = re.search(rf'melanoma_unfamiliar_images_total\{{version="{re.escape(version)}"\}} ([0-9.]+)', text)
    assert found and float(found.group(1)) == n_unfamiliar, text[-2000:]
