"""A version's probabilities on the bench's image lists, kept between runs of a bench.

Scoring a version on a few thousand images takes about a minute on two cores, and a bench that
compares two dozen versions rescored all of them each time one was added. A published version does
not change, so its probabilities are kept in one file per version, under a key of what they depend
on: the network file's bytes, the temperature, each list's files in order with their sizes and
modification times, and the source of the code that turns a file into probabilities (decoding,
resizing, softmax). A different key, or a kept file that cannot be read, means scoring again; so does
``--rescore``, which a bench offers for what the key leaves out (a new TensorFlow, say).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.ml import assess
from melanoma.versions.registry import MODEL_FILE, Registry

# The modules between an image file and a probability: an edit to any of them rescoring everything
# errs on the safe side.
_CODE = ("core/images.py", "ml/data.py", "ml/assess.py", "ml/evaluate.py", "ml/layers.py")
_PACKAGE = Path(__file__).resolve().parent.parent / "melanoma"


def key(folder: Path, temperature: float, lists: Mapping[str, Sequence[Path | str]]) -> str:
    """The fingerprint of what a version's probabilities on ``lists`` depend on."""
    with open(folder / MODEL_FILE, "rb") as f:
        h = hashlib.file_digest(f, "sha256")
    for name in _CODE:
        h.update((_PACKAGE / name).read_bytes())
    h.update(
        json.dumps(
            {
                "temperature": repr(float(temperature)),
                "lists": {k: [_stamp(Path(p)) for p in v] for k, v in sorted(lists.items())},
            }
        ).encode()
    )
    return h.hexdigest()


def probabilities(
    registry: Registry, version: str, temperature: float, images: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """``version``'s probabilities on each named image set (an object whose ``x(size)`` gives its images
    decoded at that size, as ``bench.ensemble._Images``), at its input size and ``temperature``: the
    ``score`` a bench hands to :func:`cached`."""
    model = registry.load(version)
    size = assess.input_size(model)
    return {name: assess.predict_probs(model, imgs.x(size), temperature=temperature) for name, imgs in images.items()}


def _stamp(path: Path) -> tuple[str, int, int]:
    # Size and modification time: a file rewritten in place is scored again, without reading it.
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def cached(
    cache: Path,
    folder: Path,
    temperature: float,
    lists: Mapping[str, Sequence[Path | str]],
    score: Callable[[], Mapping[str, np.ndarray]],
    rescore: bool = False,
) -> tuple[dict[str, np.ndarray], bool]:
    """The version's probabilities on each of ``lists`` (name → files) and whether they came from
    ``cache``: read from ``cache/<version>.npz`` while its key matches, otherwise ``score()`` and
    saved there (``rescore`` skips the reading)."""
    fingerprint = key(folder, temperature, lists)
    path = cache / f"{folder.name}.npz"
    if not rescore:
        try:
            with np.load(path) as kept:
                if str(kept["_key"]) == fingerprint and set(kept.files) == {"_key", *lists}:
                    return {name: kept[name] for name in lists}, True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # none yet, or unreadable: scored again below
    scored = score()
    for name, files in lists.items():
        if name not in scored or len(scored[name]) != len(files):
            raise ValueError(f"score() gave no row per file of {name!r}")
    probs = {name: np.asarray(scored[name]) for name in lists}
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    arrays: dict[str, Any] = {"_key": np.array(fingerprint), **probs}  # Any: savez's stubs type **kwargs as its flags
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # a reader never sees half a file
    return probs, False
