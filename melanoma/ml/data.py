"""Read labelled image sets, remove duplicates and label conflicts, split by lesion.

Two layouts are understood:

* nine class folders named as in :data:`melanoma.core.labels.CLASS_NAMES` (the ISIC nine-class set),
  with an optional ``manifest.csv`` beside or above them (``path,label,isic_id,md5,ham_lesion_id,
  ham_dx,isic2017_melanoma,...``);
* HAM10000 diagnosis-code folders (``akiec``, ``bcc``, ``bkl``, ``df``, ``mel``, ``nv``, ``vasc``)
  with ``metadata.csv`` (``image_id,lesion_id,dx,...``).
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from melanoma.core import images
from melanoma.core.labels import CLASS_NAMES, is_image_file, slug

# HAM10000 diagnosis codes to the nine class names. "bkl" (benign keratosis-like) holds both
# pigmented benign and seborrheic keratoses; it maps to the former, the larger nine-class folder.
HAM_DX = {
    "akiec": "actinic keratosis",
    "bcc": "basal cell carcinoma",
    "bkl": "pigmented benign keratosis",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "nevus",
    "vasc": "vascular lesion",
}

# Nine-class labels each HAM10000 diagnosis is consistent with: "akiec" includes Bowen's disease
# (squamous cell carcinoma in situ) and "bkl" includes seborrheic keratoses.
HAM_COMPATIBLE = {
    "akiec": {"actinic keratosis", "squamous cell carcinoma"},
    "bkl": {"pigmented benign keratosis", "seborrheic keratosis"},
}

_ID_RE = re.compile(r"(ISIC_\d+)")


@dataclass
class Sample:
    """One labelled image file."""

    path: Path
    label: str
    image_id: str
    lesion_id: str | None = None
    md5: str = ""
    ham_dx: str | None = None
    isic2017_melanoma: float | None = None
    source: str = ""
    # How the diagnosis was confirmed where the source records it (HAM10000's ``dx_type``: histo,
    # follow_up, consensus, confocal).
    confirmed_by: str | None = None
    # Other files of the same image (``(path, source)``), dropped as duplicates by :func:`clean`:
    # kept so that a source can be evaluated on its own copies and left out of training whole.
    copies: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def label_index(self) -> int:
        return CLASS_NAMES.index(self.label)


@dataclass
class CleanReport:
    """What :func:`clean` removed or relabelled, and why."""

    read: int = 0
    kept: int = 0
    dropped_duplicates: list[str] = field(default_factory=list)
    resolved_conflicts: list[str] = field(default_factory=list)
    dropped_ambiguous: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped_duplicates": len(self.dropped_duplicates),
            "resolved_conflicts": len(self.resolved_conflicts),
            "dropped_ambiguous": len(self.dropped_ambiguous),
            "relabelled": len(self.relabelled),
        }


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _image_id(path: Path) -> str:
    m = _ID_RE.search(path.stem)
    return m.group(1) if m else path.stem


def _find_manifest(root: Path, names: tuple[str, ...]) -> Path | None:
    for folder in (root, root.parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


# Folders that hold more images of another source (same dermatoscopes, same archive).
SOURCE_ALIASES = {"ham10000-extra": "ham10000"}


def source_name(root: str | Path) -> str:
    """The acquisition source a data folder belongs to: ``isic-9class/Train`` -> ``isic-9class``,
    ``ham10000-extra`` -> ``ham10000``."""
    root = Path(root)
    name = root.parent.name if root.name.lower() in ("train", "test", "val") else root.name
    return SOURCE_ALIASES.get(name, name)


def read_dataset(root: str | Path) -> list[Sample]:
    """Read every image of a folder-per-class data set (nine-class names or HAM10000 codes)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    by_folder = {slug(c): c for c in CLASS_NAMES}
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    ham = all(d.name in HAM_DX for d in class_dirs) and class_dirs
    extra: dict[str, dict[str, str]] = {}
    manifest = _find_manifest(root, ("metadata.csv",) if ham else ("manifest.csv", "labels.csv"))
    if manifest is not None:
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                key = row.get("image_id") or row.get("isic_id") or ""
                if "path" in row:
                    key = str((manifest.parent / row["path"]).resolve())
                extra[key] = row
    samples: list[Sample] = []
    for d in class_dirs:
        label = HAM_DX.get(d.name) if ham else by_folder.get(slug(d.name))
        if label is None:
            continue
        for f in sorted(d.iterdir()):
            if not f.is_file() or not is_image_file(f):
                continue
            image_id = _image_id(f)
            row = extra.get(str(f.resolve())) or extra.get(image_id) or {}
            mel = row.get("isic2017_melanoma") or ""
            samples.append(
                Sample(
                    path=f,
                    label=label,
                    image_id=row.get("isic_id") or row.get("image_id") or image_id,
                    lesion_id=row.get("ham_lesion_id") or row.get("lesion_id") or None,
                    md5=row.get("md5") or "",
                    ham_dx=row.get("ham_dx") or row.get("dx") or (d.name if ham else None),
                    isic2017_melanoma=float(mel) if mel else None,
                    source=source_name(root),
                    confirmed_by=row.get("dx_type") or None,
                )
            )
    return samples


def _groups(samples: list[Sample]) -> list[list[Sample]]:
    """Connected groups of samples that share an image id or identical bytes."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, s in enumerate(samples):
        for key in (("id", s.image_id), ("md5", s.md5)):
            if not key[1]:
                continue
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    grouped: dict[int, list[Sample]] = defaultdict(list)
    for i, s in enumerate(samples):
        grouped[find(i)].append(s)
    return list(grouped.values())


def _resolve(group: list[Sample]) -> str | None:
    """The trusted label of a group of copies with conflicting labels, or None when unknowable."""
    labels = {s.label for s in group}
    # HAM10000's histopathology-backed diagnosis settles nevus-vs-actinic-keratosis copies.
    for s in group:
        if s.ham_dx and HAM_DX.get(s.ham_dx) in labels:
            return HAM_DX[s.ham_dx]
    # ISIC-2017 ground truth settles melanoma-vs-seborrheic-keratosis copies.
    for s in group:
        if s.isic2017_melanoma == 1.0 and "melanoma" in labels:
            return "melanoma"
        if s.isic2017_melanoma == 0.0 and "melanoma" in labels and len(labels - {"melanoma"}) == 1:
            return next(iter(labels - {"melanoma"}))
    return None


def clean(samples: list[Sample]) -> tuple[list[Sample], CleanReport]:
    """Keep one file per image (by id and by content) and one trusted label per image.

    A folder label that contradicts the image's HAM10000 diagnosis or ISIC-2017 melanoma ground
    truth is replaced by it.
    Byte-identical copies and copies under the same image id collapse to one sample. Where
    the copies disagree on the label, HAM10000's diagnosis or ISIC-2017's melanoma ground truth
    decides; where neither is known, the image is dropped rather than trained on a coin flip.
    """
    report = CleanReport(read=len(samples))
    for s in samples:
        if not s.md5:
            s.md5 = _md5(s.path)
        # A folder label that contradicts HAM10000's (histopathology-backed) diagnosis of the
        # same image is a filing mistake: "nevus" images that HAM10000 calls akiec.
        if s.ham_dx in HAM_DX and s.label not in HAM_COMPATIBLE.get(s.ham_dx, {HAM_DX[s.ham_dx]}):
            report.relabelled.append(f"{s.path}: {s.label} -> {HAM_DX[s.ham_dx]} (HAM10000 dx {s.ham_dx})")
            s.label = HAM_DX[s.ham_dx]
        # Likewise ISIC-2017's melanoma ground truth: "seborrheic keratosis" files it calls melanoma.
        if s.isic2017_melanoma == 1.0 and s.label != "melanoma":
            report.relabelled.append(f"{s.path}: {s.label} -> melanoma (ISIC-2017 ground truth)")
            s.label = "melanoma"
    kept: list[Sample] = []
    for group in _groups(samples):
        # Prefer the copy with a lesion id, then the plain name over a "(1)" copy.
        group.sort(key=lambda s: (s.lesion_id is None, len(s.path.name), str(s.path)))
        labels = {s.label for s in group}
        if len(labels) == 1:
            label: str | None = group[0].label
        else:
            label = _resolve(group)
            if label is None:
                report.dropped_ambiguous.extend(str(s.path) for s in group)
                continue
            report.resolved_conflicts.append(f"{group[0].image_id}: {sorted(labels)} -> {label}")
        keep = next(s for s in group if s.label == label)
        lesion = next((s.lesion_id for s in group if s.lesion_id), None)
        keep.lesion_id = lesion
        keep.copies = [(s.path, s.source) for s in group if s is not keep]
        kept.append(keep)
        report.dropped_duplicates.extend(str(s.path) for s in group if s is not keep)
    kept.sort(key=lambda s: str(s.path))
    report.kept = len(kept)
    return kept, report


def fingerprint(samples: list[Sample]) -> str:
    """A hash of what a model was trained and validated on: image ids, contents and labels."""
    h = hashlib.sha256()
    for key in sorted(f"{s.image_id}\t{s.md5}\t{s.label}" for s in samples):
        h.update(key.encode() + b"\n")
    return h.hexdigest()


def listing_fingerprint(dirs: list[Path]) -> str:
    """A cheap hash of the image files under ``dirs`` (names, sizes, times): changes when images are added."""
    h = hashlib.sha256()
    for d in sorted(Path(x) for x in dirs):
        for f in sorted(d.rglob("*")):
            if f.is_file() and (is_image_file(f) or f.suffix.lower() == ".csv"):
                st = f.stat()
                h.update(f"{f.relative_to(d)}\t{st.st_size}\t{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def limit_per_class(samples: list[Sample], n: int, seed: int = 123) -> list[Sample]:
    """At most ``n`` samples of each class, chosen at random with a fixed seed (for quick runs)."""
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    out: list[Sample] = []
    for label in sorted(by_class):
        group = by_class[label][:]
        rng.shuffle(group)
        out.extend(group[:n])
    return sorted(out, key=lambda s: str(s.path))


def class_counts(samples: list[Sample]) -> dict[str, int]:
    """Images per class, in class order, zeros included."""
    c = Counter(s.label for s in samples)
    return {name: c.get(name, 0) for name in CLASS_NAMES}


def load_arrays(
    paths: list[Path], labels: list[int], desc: str = "decoding", size: tuple[int, int] = images.IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Decode files with the scoring preprocessing into ``(N, height, width, 3) uint8`` (``size``, the
    model's input) and ``(N,) int32``."""
    x = np.empty((len(paths), *size, 3), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", leave=False)):
        x[i] = images.load(p, size)
    return x, np.asarray(labels, dtype=np.int32)


def read_clean(dirs: tuple[Path, ...], extra: list[Sample] | None = None) -> tuple[list[Sample], CleanReport]:
    """Read every data folder and :func:`clean` them together (with ``extra`` samples, a clinic's
    confirmed cases)."""
    samples: list[Sample] = list(extra or [])
    for d in dirs:
        samples.extend(read_dataset(d))
    return clean(samples)
