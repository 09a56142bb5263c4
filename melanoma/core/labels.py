"""The nine lesion classes and how they are named in columns and on the command line."""

from __future__ import annotations

import os

# Alphabetical, as the origin model's image_dataset_from_directory ordered its class folders;
# the index of a name here is the model's output index.
CLASS_NAMES: tuple[str, ...] = (
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True if the file name has one of the image extensions (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def slug(name: str) -> str:
    """``"basal cell carcinoma"`` -> ``"basal_cell_carcinoma"``."""
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def prob_column(name: str) -> str:
    """Column holding the probability of class ``name``: ``p_melanoma``, ``p_basal_cell_carcinoma``."""
    return "p_" + slug(name)


PROB_COLUMNS: tuple[str, ...] = tuple(prob_column(c) for c in CLASS_NAMES)


def parse_class(text: str) -> str:
    """Accept a class as written by a person (any case, spaces or underscores); return its canonical name."""
    wanted = slug(text)
    for name in CLASS_NAMES:
        if slug(name) == wanted:
            return name
    raise ValueError(f"unknown class {text!r}; choose one of: " + ", ".join(slug(c) for c in CLASS_NAMES))
