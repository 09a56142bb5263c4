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
from dataclasses import dataclass, field, replace
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


def split_by_lesion(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 123
) -> tuple[list[Sample], list[Sample]]:
    """Split into training and validation so that no lesion (or image) is on both sides.

    Stratified by class: for every class, whole lesions are drawn at random (fixed seed)
    until about ``val_fraction`` of that class's images are in validation.
    """
    lesions: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        lesions[s.lesion_id or f"image:{s.image_id}"].append(s)
    by_class: dict[str, list[str]] = defaultdict(list)
    for key, members in sorted(lesions.items()):
        majority = Counter(m.label for m in members).most_common(1)[0][0]
        by_class[majority].append(key)
    rng = random.Random(seed)
    val_keys: set[str] = set()
    for label in sorted(by_class):
        keys = by_class[label]
        rng.shuffle(keys)
        target = val_fraction * sum(len(lesions[k]) for k in keys)
        taken = 0
        for k in keys:
            if taken >= target:
                break
            val_keys.add(k)
            taken += len(lesions[k])
    train = [s for k, m in lesions.items() if k not in val_keys for s in m]
    val = [s for k, m in lesions.items() if k in val_keys for s in m]
    return sorted(train, key=lambda s: str(s.path)), sorted(val, key=lambda s: str(s.path))


def split_three(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Training, validation and (if ``test_fraction`` > 0) test splits, all by lesion."""
    if test_fraction <= 0:
        train, val = split_by_lesion(samples, val_fraction, seed)
        return train, val, []
    rest, test = split_by_lesion(samples, test_fraction, seed)
    train, val = split_by_lesion(rest, val_fraction / (1 - test_fraction), seed + 1)
    return train, val, test


def split_inherited(
    samples: list[Sample], assigned: dict[str, str], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Like :func:`split_three`, but images listed in ``assigned`` (image id -> ``train``/``val``/``test``)
    keep their side, and so does every other image of their lesion.

    Fine-tuning a published version on more data must not put its training images into the new
    test split; the images it never saw are split as usual.
    """
    lesions: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        lesions[s.lesion_id or f"image:{s.image_id}"].append(s)
    sides: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    fresh: list[Sample] = []
    rank = {"test": 0, "val": 1, "train": 2}
    for members in lesions.values():
        known = [assigned[m.image_id] for m in members if m.image_id in assigned]
        if known:
            # A lesion split across sides before (cannot happen with split_three) goes to the most held-out one.
            sides[min(known, key=rank.__getitem__)].extend(members)
        else:
            fresh.extend(members)
    train, val, test = split_three(fresh, val_fraction, test_fraction, seed)
    return (
        sorted(sides["train"] + train, key=lambda s: str(s.path)),
        sorted(sides["val"] + val, key=lambda s: str(s.path)),
        sorted(sides["test"] + test, key=lambda s: str(s.path)),
    )


def file_in_source(sample: Sample, source: str) -> Path | None:
    """The file of ``sample``'s image that belongs to ``source`` (itself or one of its copies), if any."""
    if sample.source == source:
        return sample.path
    return next((p for p, src in sample.copies if src == source), None)


def sources_of(sample: Sample) -> set[str]:
    """Every source holding a copy of ``sample``'s image."""
    return {sample.source, *(src for _, src in sample.copies)}


def separate_sources(samples: list[Sample], exclude: set[str]) -> tuple[list[Sample], list[Sample]]:
    """Split off every image that any excluded source holds (its copies elsewhere too).

    Returns ``(rest, external)``; each external sample points at its file in the excluded source, so
    the external test scores that source's own files.
    """
    rest, external = [], []
    for s in samples:
        hit = sorted(sources_of(s) & exclude)
        if not hit:
            rest.append(s)
            continue
        path = file_in_source(s, hit[0])
        assert path is not None
        others = [(p, src) for p, src in [(s.path, s.source), *s.copies] if p != path]
        external.append(replace(s, path=path, source=hit[0], copies=others))
    return rest, external


def source_class_counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Images per class for every source, classes in class order (zeros included)."""
    by_source: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_source[s.source].append(s)
    return {src: class_counts(members) for src, members in sorted(by_source.items())}


def sampling_weights(samples: list[Sample], class_power: float = 0.5, source_power: float = 0.5) -> np.ndarray:
    """Per-image sampling probabilities that make the class independent of the source.

    Each source gets a share ``N_s ** source_power`` (1 = as in the data, 0 = equal), and within
    every source the classes it has are drawn in the same proportions, ``n_c ** class_power`` over
    all sources (0 = balanced classes, 1 = as in the data). A model then cannot predict the class
    from what betrays the source (camera,
    resolution, colour): in the raw data almost every nevus comes from HAM10000 and most other
    images are melanomas, and a model learns "not HAM10000" as "melanoma".
    """
    if not samples:
        return np.zeros(0)
    total = Counter(s.label for s in samples)
    prior = {c: n**class_power for c, n in total.items()}
    cell = Counter((s.source, s.label) for s in samples)
    per_source = Counter(s.source for s in samples)
    present: dict[str, set[str]] = defaultdict(set)
    for src, label in cell:
        present[src].add(label)
    w = np.empty(len(samples))
    for i, s in enumerate(samples):
        norm = sum(prior[c] for c in present[s.source])
        w[i] = per_source[s.source] ** source_power * prior[s.label] / norm / cell[(s.source, s.label)]
    return w / w.sum()


def class_sampling_weights(samples: list[Sample], class_power: float = 0.5) -> np.ndarray:
    """Per-image sampling probabilities with the classes drawn ``n_c ** class_power`` over all
    sources pooled, whatever source an image comes from (the ablation of :func:`sampling_weights`:
    the same class balance, but the class is left dependent on the source)."""
    if not samples:
        return np.zeros(0)
    total = Counter(s.label for s in samples)
    w = np.array([total[s.label] ** class_power / total[s.label] for s in samples])
    return w / w.sum()


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


def load_arrays(paths: list[Path], labels: list[int], desc: str = "decoding") -> tuple[np.ndarray, np.ndarray]:
    """Decode files with the scoring preprocessing into ``(N,180,180,3) uint8`` and ``(N,) int32``."""
    x = np.empty((len(paths), *images.IMAGE_SIZE, 3), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", leave=False)):
        x[i] = images.load(p)
    return x, np.asarray(labels, dtype=np.int32)


def read_clean(dirs: tuple[Path, ...]) -> tuple[list[Sample], CleanReport]:
    """Read every data folder and :func:`clean` them together."""
    samples: list[Sample] = []
    for d in dirs:
        samples.extend(read_dataset(d))
    return clean(samples)
