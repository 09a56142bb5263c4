"""bench.scores: a version's probabilities are reused only while everything they depend on is the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bench import scores
from melanoma.versions.registry import MODEL_FILE

NAMES = {"held": ["a.jpg", "b.jpg", "c.jpg"], "pool": ["d.jpg"]}


class Scorer:
    """Counts its calls; each call gives new probabilities, so a reused result is told apart."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, lists: dict[str, list[Path]]) -> dict[str, np.ndarray]:
        self.calls += 1
        rng = np.random.default_rng(self.calls)
        return {name: rng.dirichlet(np.ones(9), len(files)) for name, files in lists.items()}


@pytest.fixture
def lists(tmp_path: Path) -> dict[str, list[Path]]:
    out = {}
    for name, files in NAMES.items():
        out[name] = [tmp_path / "images" / f for f in files]
        for f in out[name]:
            f.parent.mkdir(exist_ok=True)
            f.write_bytes(b"jpeg " + f.name.encode())
    return out


@pytest.fixture
def version(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "pretrained-20261207T000000-abcd"
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"network weights " * 1000)
    return folder


def _cached(
    tmp_path: Path, version: Path, temperature: float, lists: dict[str, list[Path]], score: Scorer, **kw: bool
) -> tuple[dict[str, np.ndarray], bool]:
    return scores.cached(tmp_path / "cache", version, temperature, lists, lambda: score(lists), **kw)


def test_the_second_run_reads_what_the_first_scored(
    tmp_path: Path, version: Path, lists: dict[str, list[Path]]
) -> None:
    score = Scorer()
    first, reused = _cached(tmp_path, version, 1.3, lists, score)
    assert not reused and score.calls == 1
    again, reused = _cached(tmp_path, version, 1.3, lists, score)
    assert reused and score.calls == 1
    assert again.keys() == lists.keys()
    for name in lists:
        np.testing.assert_array_equal(again[name], first[name])
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{version.name}.npz"]


@pytest.mark.parametrize(
    "change",
    ["network", "temperature", "order", "one more file", "another list", "a file rewritten", "code"],
)
def test_any_change_they_depend_on_scores_again(
    tmp_path: Path, version: Path, lists: dict[str, list[Path]], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    score = Scorer()
    _cached(tmp_path, version, 1.3, lists, score)
    temperature = 1.3
    if change == "network":
        (version / MODEL_FILE).write_bytes(b"network weights " * 999 + b"network weighTs ")
    elif change == "temperature":
        temperature = 1.3000001
    elif change == "order":
        lists["held"].reverse()
    elif change == "one more file":
        lists["pool"].append(lists["held"][0])
    elif change == "another list":
        lists["ham"] = lists["pool"]
    elif change == "a file rewritten":
        lists["held"][1].write_bytes(b"another jpeg")
    else:
        code = tmp_path / "melanoma"
        shutil.copytree(scores._PACKAGE, code, ignore=shutil.ignore_patterns("__pycache__"))
        evaluate = code / "ml" / "evaluate.py"
        evaluate.write_text(evaluate.read_text() + "\n# an edit\n")
        monkeypatch.setattr(scores, "_PACKAGE", code)
    got, reused = _cached(tmp_path, version, temperature, lists, score)
    assert not reused and score.calls == 2
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in lists.items()}
    # and the new scores replace the old ones
    _, reused = _cached(tmp_path, version, temperature, lists, score)
    assert reused and score.calls == 2


def test_an_unreadable_file_is_scored_again_and_replaced(
    tmp_path: Path, version: Path, lists: dict[str, list[Path]]
) -> None:
    score = Scorer()
    _cached(tmp_path, version, 1.0, lists, score)
    kept = tmp_path / "cache" / f"{version.name}.npz"
    kept.write_bytes(kept.read_bytes()[:100])
    _, reused = _cached(tmp_path, version, 1.0, lists, score)
    assert not reused and score.calls == 2
    _, reused = _cached(tmp_path, version, 1.0, lists, score)
    assert reused and score.calls == 2


def test_rescore_does_not_read_the_kept_scores(tmp_path: Path, version: Path, lists: dict[str, list[Path]]) -> None:
    score = Scorer()
    first, _ = _cached(tmp_path, version, 1.0, lists, score)
    second, reused = _cached(tmp_path, version, 1.0, lists, score, rescore=True)
    assert not reused and score.calls == 2
    assert not np.array_equal(first["held"], second["held"])


def test_scores_without_a_row_per_file_are_refused_and_not_kept(
    tmp_path: Path, version: Path, lists: dict[str, list[Path]]
) -> None:
    def short() -> dict[str, np.ndarray]:
        return {"held": np.zeros((2, 9)), "pool": np.zeros((1, 9))}

    with pytest.raises(ValueError, match="'held'"):
        scores.cached(tmp_path / "cache", version, 1.0, lists, short)
    assert not (tmp_path / "cache" / f"{version.name}.npz").exists()
