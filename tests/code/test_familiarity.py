"""Familiarity statistics without a model: fitting, percentiles, saving and loading, bad files, the
registry's atomic add, and the job summary's warning."""

import numpy as np
import pytest

from melanoma.ml import familiarity as fam
from melanoma.ml import familiarity_fit
from melanoma.store.jobs import JobStatus
from melanoma.versions.registry import FAMILIARITY_FILE, ModelMeta, Registry, RegistryError


def _features(rng, n, shift=0.0, d=12, classes=9):
    y = rng.integers(0, classes, n)
    centres = np.eye(classes, d) * 4.0
    return centres[y] + rng.normal(size=(n, d)) + shift, y


def _mid(rng, n, shift=0.0, d=6):
    """Middle-block statistics: one Gaussian blob, independent of the class."""
    return rng.normal(size=(n, d)) + shift


def _out(features, mid=None):
    return fam.Outputs(features, np.zeros((len(features), 9)), mid)


@pytest.fixture
def stats():
    rng = np.random.default_rng(0)
    train, y = _features(rng, 2000)
    val, _ = _features(rng, 1000)
    return fam.fit(
        fam.Outputs(train, np.zeros((2000, 9)), _mid(rng, 2000)),
        y,
        fam.Outputs(val, rng.normal(size=(1000, 9)) * 3, _mid(rng, 1000)),
        info={"midlevel_layer": "block"},
    )


def test_mahalanobis_matches_the_textbook_formula(stats):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 12))
    mid = rng.normal(size=(5, 6)) * 3
    precision = stats.classes.whitener @ stats.classes.whitener.T
    expected = np.min(
        [[(xi - m) @ precision @ (xi - m) for m in stats.means] for xi in x],
        axis=1,
    )
    mid_precision = stats.midlevel.whitener @ stats.midlevel.whitener.T
    centre = stats.midlevel.means[0]
    raw = stats.raw(_out(x, mid))
    np.testing.assert_allclose(raw[:, fam.COMPONENTS.index("mahalanobis")], expected, rtol=1e-9)
    np.testing.assert_allclose(raw[:, fam.COMPONENTS.index("norm")], -np.linalg.norm(x, axis=1), rtol=1e-12)
    mid_expected = [(m - centre) @ mid_precision @ (m - centre) for m in mid]
    np.testing.assert_allclose(raw[:, fam.COMPONENTS.index("midlevel")], mid_expected, rtol=1e-9)


def test_the_default_flags_images_unlike_in_either_score(stats):
    rng = np.random.default_rng(3)
    like, _ = _features(rng, 50)
    # Penultimate features like the classes', middle-block statistics unlike (a plain colour field).
    raw = stats.raw(_out(like, _mid(rng, 50, shift=8.0)))
    assert np.median(stats.percentile(raw, "mahalanobis")) < 99
    assert np.all(stats.percentile(raw) > 99) and stats.method == "mahalanobis+midlevel"
    # Features shrunk towards zero: weak, featureless, yet not far from every class mean.
    raw = stats.raw(_out(like * 0.05, _mid(rng, 50)))
    assert np.median(stats.percentile(raw, "mahalanobis")) < 99
    assert np.all(stats.percentile(raw, "mahalanobis+norm") > 99)


def test_a_combination_is_a_percentile_of_the_validation_images_own_largest(stats):
    """The largest of two percentiles, re-expressed against the validation images' largest: the
    order is the largest's, and the top scores stay at the top."""
    rng = np.random.default_rng(4)
    like, _ = _features(rng, 300)
    raw = stats.raw(_out(like, _mid(rng, 300)))
    largest = np.maximum(stats.percentile(raw, "mahalanobis"), stats.percentile(raw, "midlevel"))
    combined = stats.percentile(raw)
    order = np.argsort(largest, kind="stable")
    assert np.all(np.diff(combined[order]) >= 0)
    # A stricter scale: more than one score can be high, so the same largest ranks lower.
    assert np.all(combined <= largest + 1e-9) and np.any(combined < largest - 1)
    assert np.all(combined[largest == 100.0] == 100.0)


def test_energy_is_minus_logsumexp():
    z = np.array([[1.0, 2.0, 3.0], [100.0, 0.0, 0.0]])
    # exp(100) would overflow a naive sum in float32; the score stays exact.
    np.testing.assert_allclose(fam.energy(z), [-np.log(np.exp(z[0]).sum()), -100.0], rtol=1e-12)


def test_percentiles_of_like_images_are_uniform_and_foreign_ones_top(stats):
    rng = np.random.default_rng(2)
    like, _ = _features(rng, 4000)
    raw = stats.raw(_out(like, _mid(rng, 4000)))
    # Images drawn like the validation ones: one score's percentiles are uniform (about 1 % above
    # 99, median 50); so is a combination, re-expressed against the validation images' own (the plain
    # larger of two would be above 99 for up to 2 %, its median about 71).
    for method in ("mahalanobis", "mahalanobis+midlevel", "mahalanobis+norm"):
        p = stats.percentile(raw, method)
        assert 0.003 < np.mean(p > 99) < 0.02 and 45 < np.median(p) < 55, method
    far, _ = _features(rng, 200, shift=6.0)
    assert np.all(stats.percentile(stats.raw(_out(far, _mid(rng, 200)))) > 99)


def test_save_and_load_keep_everything(stats, tmp_path):
    stats.info["fitted_by"] = "test"
    stats.save(tmp_path / FAMILIARITY_FILE)
    back = fam.Familiarity.load(tmp_path / FAMILIARITY_FILE)
    assert back.method == stats.method and back.info["fitted_by"] == "test"
    for a, b in ((back.classes, stats.classes), (back.midlevel, stats.midlevel)):
        np.testing.assert_allclose(a.means, b.means, rtol=1e-6)
        np.testing.assert_allclose(a.whitener, b.whitener, rtol=1e-6)
    assert set(back.references) == set(stats.references) >= {*fam.COMPONENTS, "mahalanobis+midlevel"}
    for c in stats.references:
        np.testing.assert_array_equal(back.references[c], stats.references[c])


def test_statistics_without_the_middle_block_still_load_and_apply(tmp_path):
    """Versions fitted before the ``midlevel`` score (method mahalanobis+norm, no combined
    reference) keep working: the largest percentile, as they were fitted."""
    rng = np.random.default_rng(5)
    train, y = _features(rng, 500)
    val, _ = _features(rng, 300)
    stats = fam.fit(_out(train), y, _out(val), method="mahalanobis+norm")
    assert stats.midlevel is None and "midlevel" not in stats.references
    del stats.references["mahalanobis+norm"]  # as the first files were written
    stats.save(tmp_path / FAMILIARITY_FILE)
    back = fam.Familiarity.load(tmp_path / FAMILIARITY_FILE)
    raw = back.raw(_out(val))
    plain = np.maximum(back.percentile(raw, "mahalanobis"), back.percentile(raw, "norm"))
    np.testing.assert_array_equal(back.percentile(raw), plain)
    with pytest.raises(fam.FamiliarityError, match="middle block"):
        fam.fit(_out(train), y, _out(val))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no familiarity statistics"),
        (b"", "not an .npz file"),
        (b"not a zip at all", "not an .npz file"),
    ],
)
def test_missing_or_unreadable_statistics_say_so(tmp_path, content, message):
    path = tmp_path / FAMILIARITY_FILE
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(fam.FamiliarityError, match=message):
        fam.Familiarity.load(path)


def test_inconsistent_statistics_are_refused(stats, tmp_path):
    whitener = stats.classes.whitener
    stats.classes.whitener = whitener[:5]
    stats.save(tmp_path / FAMILIARITY_FILE)
    with pytest.raises(fam.FamiliarityError, match="inconsistent"):
        fam.Familiarity.load(tmp_path / FAMILIARITY_FILE)
    stats.classes.whitener = whitener
    stats.info.pop("midlevel_layer", None)  # the midlevel score without the layer it summarises
    stats.save(tmp_path / FAMILIARITY_FILE)
    with pytest.raises(fam.FamiliarityError, match="inconsistent"):
        fam.Familiarity.load(tmp_path / FAMILIARITY_FILE)
    np.savez(tmp_path / "other.npz", means=np.zeros((2, 2)))  # a valid npz of something else
    with pytest.raises(fam.FamiliarityError, match="unreadable"):
        fam.Familiarity.load(tmp_path / "other.npz")


def test_unknown_method_is_refused():
    with pytest.raises(fam.FamiliarityError, match="unknown familiarity method"):
        fam.fit(_out(np.zeros((4, 2))), np.array([0, 0, 1, 1]), _out(np.zeros((2, 2))), method="vibes")


def test_training_subset_is_balanced_and_deterministic():
    labels = np.array([0] * 1000 + [1] * 50 + [2] * 400)
    idx = familiarity_fit.training_subset(labels, per_class=300)
    assert np.bincount(labels[idx]).tolist() == [300, 50, 300]
    np.testing.assert_array_equal(idx, familiarity_fit.training_subset(labels, per_class=300))


def test_registry_adds_a_file_atomically_and_guards_the_model(tmp_path, stats):
    reg = Registry(tmp_path)
    model = tmp_path / "m.keras"
    model.write_bytes(b"model")
    reg.publish(model, ModelMeta(version="v1", architecture="origin"))
    reg.add_file("v1", FAMILIARITY_FILE, stats.to_bytes())
    reg.add_file("v1", FAMILIARITY_FILE, stats.to_bytes())  # replacing is fine
    assert fam.Familiarity.load(reg.path("v1") / FAMILIARITY_FILE).method == stats.method
    assert not [p for p in reg.path("v1").iterdir() if p.name.startswith(".")]
    for name in ("model.keras", "metadata.json", "../x", ".hidden"):
        with pytest.raises(RegistryError):
            reg.add_file("v1", name, b"x")
    with pytest.raises(RegistryError, match="not found"):
        reg.add_file("v2", FAMILIARITY_FILE, b"x")


def _status(measured, unfamiliar):
    return JobStatus("j", None, "/r", "", measured, measured, 0, 0, {}, measured, measured, unfamiliar, 50.0)


def test_shift_warning_only_above_the_share():
    assert _status(100, 10).shift_warning(0.1) is None
    warning = _status(100, 41).shift_warning(0.1)
    assert warning is not None and warning.startswith("41% of these images look unlike")
    assert "expect lower accuracy" in warning
    assert _status(0, 0).shift_warning(0.0) is None  # nothing measured: no claim either way
    assert _status(0, 0).as_dict()["unfamiliar_share"] is None


def test_features_that_never_vary_still_fit():
    """A barely trained model can leave every feature constant (dead units): the fit still gives
    usable statistics instead of a singular covariance."""
    train = np.zeros((30, 8))
    train[:, 0] = 1.0
    stats = fam.fit(_out(train, np.zeros((30, 4))), np.arange(30) % 3, _out(np.zeros((10, 8)), np.zeros((10, 4))))
    assert np.all(np.isfinite(stats.classes.whitener)) and np.all(np.isfinite(stats.midlevel.whitener))
    assert np.all(np.isfinite(stats.percentile(stats.raw(_out(np.ones((2, 8)), np.ones((2, 4)))))))


@pytest.mark.parametrize("measured", [True, False])
def test_status_reports_familiarity_or_says_it_is_unavailable(tmp_path, measured):
    """`melanoma status` over a database alone: the unfamiliar count, median and warning, or one line
    saying the version that scored the job had no statistics."""
    import json

    from sqlalchemy import update

    from melanoma.store import db, jobs
    from melanoma.store.schema import Prediction
    from tests.conftest import copy_images, run_cli

    folder = tmp_path / "imgs"
    copy_images(folder, 2, ["melanoma", "nevus"])
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = db.make_engine(url)
    db.ensure_schema(engine)
    with db.session_scope(engine) as s:
        job, ids = jobs.create_job(s, folder, jobs.discover(folder))
        for i, row_id in enumerate(ids):
            familiarity = [10.0, 40.0, 99.5, 100.0][i] if measured else None
            s.execute(
                update(Prediction)
                .where(Prediction.id == row_id)
                .values(
                    status="ok",
                    predicted_class="nevus",
                    familiarity=familiarity,
                    unfamiliar=None if familiarity is None else familiarity > 99,
                )
            )
    env = {"MELANOMA_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    table = run_cli(["status", job], env)
    assert table.returncode == 0, table.stderr
    as_json = json.loads(run_cli(["status", job, "--format", "json"], env).stdout)
    if measured:
        assert "unfamiliar 2 of 4 scored images (50%); median familiarity percentile 40 (about 50 for" in table.stdout
        assert "WARNING  50% of these images look unlike" in table.stdout
        assert (as_json["unfamiliar"], as_json["measured"], as_json["median_familiarity"]) == (2, 4, 40.0)
        assert as_json["warning"].startswith("50% of these images")
    else:
        assert "unfamiliar unknown: the model version that scored these images has no familiarity" in table.stdout
        assert "WARNING" not in table.stdout and as_json["warning"] is None and as_json["measured"] == 0
