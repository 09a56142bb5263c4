"""Familiarity: how well the out-of-distribution score tells foreign images from dermoscopy, how it
sees a source left out of training, and what it costs.

For a version with fitted statistics (``familiarity.npz``) this scores its test split (per source),
scikit-image's bundled photos, plain and graded colour fields, and the hostile corpus's
valid-but-odd lesion files, with every method its statistics hold; with ``--loso`` also a
leave-one-source-out version's left-out source against its own test split; and the worker's
images/s with and without the score (the same compiled call, batch 32)::

    python -m bench.familiarity models/VERSION --data D/isic-9class/Train --data D/ham10000 ... \\
        [--loso runs/pretrained-loso/VERSION] [--out docs/bench/familiarity]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melanoma.core import images
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import data, evaluate, familiarity, familiarity_fit, splits
from melanoma.ml.assess import by_source
from melanoma.versions import modelcard
from melanoma.versions.registry import FAMILIARITY_FILE, SPLIT_FILE, Registry

MELANOMA = CLASS_NAMES.index("melanoma")


def _decoded(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An array as the worker sees it: saved as PNG, decoded and resized by the scoring code."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return images.decode(buf.getvalue(), size)


def foreign_images(size: tuple[int, int]) -> dict[str, dict[str, np.ndarray]]:
    """Clearly foreign images by kind: scikit-image's photos, plain and graded colour fields."""
    import skimage.data as sk

    photos = {}
    for name in sk.__all__:
        if name in ("download_all", "data_dir", "lbp_frontal_face_cascade_filename", "lfw_subset", "stereo_motorcycle"):
            continue
        try:
            a = np.asarray(getattr(sk, name)())
        except Exception:  # some need a download (pooch): only what ships with the wheel
            continue
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        if a.ndim != 3 or a.shape[-1] not in (3, 4) or min(a.shape[:2]) < 32:
            continue
        if a.dtype != np.uint8:
            a = a.astype(np.float64)
            a = (255 * (a - a.min()) / max(float(np.ptp(a)), 1e-9)).astype(np.uint8)
        photos[name] = _decoded(np.ascontiguousarray(a[..., :3]), size)
    colours = {
        "black": (0, 0, 0),
        "white": (255, 255, 255),
        "grey": (128, 128, 128),
        "red": (220, 30, 30),
        "green": (30, 180, 60),
        "blue": (30, 60, 200),
        "skin light": (233, 196, 170),
        "skin mid": (198, 134, 99),
        "skin dark": (110, 70, 50),
        "pink": (230, 160, 170),
        "brown": (120, 80, 50),
        "yellow": (230, 210, 60),
    }
    h, w = size
    fields = {name: np.full((h, w, 3), rgb, np.uint8) for name, rgb in colours.items()}
    ramp = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    for name, (start, end) in {
        "skin ramp": ((233, 196, 170), (110, 70, 50)),
        "grey ramp": ((0, 0, 0), (255,) * 3),
    }.items():
        low, high = np.array(start), np.array(end)
        fields[name] = (low + (high - low) * ramp / 255).astype(np.uint8).repeat(h, axis=0)
    rng = np.random.default_rng(0)
    fields["noise"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return {"photos": photos, "colour fields": fields}


def hostile_lesions(base: Path, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The hostile corpus's files that decode (odd formats of one real lesion image)."""
    from tests.hostile import make_corpus

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / "c", base, Path(tmp) / "outside")
        for path, kind in corpus.items():
            if kind.expect == "ok":
                out[kind.name] = images.load(Path(path), size)
    return out


class Scorer:
    """Features and logits of one version, and both familiarity scores as percentiles."""

    def __init__(self, registry: Registry, version: str) -> None:
        self.model = registry.load(version)
        self.stats = familiarity.Familiarity.load(registry.path(version) / FAMILIARITY_FILE)
        self.size = (int(self.model.input_shape[1]), int(self.model.input_shape[2]))
        self.temperature = registry.meta(version).temperature

    def __call__(self, x: np.ndarray) -> dict[str, Any]:
        return self.apply(self.outputs(x))

    def outputs(self, x: np.ndarray) -> familiarity.Outputs:
        return familiarity_fit.outputs(self.model, x, self.stats.midlevel_layer)

    def apply(self, out: familiarity.Outputs) -> dict[str, Any]:
        result: dict[str, Any] = {"probs": evaluate.softmax(out.logits, self.temperature)}
        raw = self.stats.raw(out)
        for m in self.stats.methods:
            result[m] = self.stats.percentile(raw, m)
        return result


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float | None:
    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return evaluate.roc_auc(y.astype(bool), np.r_[inside, outside])


def split_samples(registry: Registry, version: str, data_dirs: tuple[Path, ...]) -> dict[str, list[data.Sample]]:
    """The version's test (and external) samples, from its split file."""
    sides = json.loads((registry.path(version) / SPLIT_FILE).read_text())
    kept, _ = data.read_clean(data_dirs)
    rest, external = splits.separate_sources(kept, set(registry.meta(version).data.get("excluded_sources", [])))
    out = {"test": [s for s in rest if s.image_id in set(sides["test"])]}
    if sides.get("external"):
        out["external"] = [s for s in external if s.image_id in set(sides["external"])]
    return out


def score_sources(
    scorer: Scorer, samples: list[data.Sample], desc: str, cache: Path | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Per source: labels, probabilities and both percentiles. With ``cache`` (a folder), each
    source's features and logits are kept there and reused by the next run."""
    out = {}
    for src, files in by_source(samples).items():
        kept = cache / f"{desc}-{src.replace('/', '_')}.npz" if cache else None
        # A cache written before the middle block's statistics existed lacks them: scored again.
        cached = None
        if kept is not None and kept.is_file():
            with np.load(kept) as z:
                if "midlevel" in z.files:
                    cached = z["y"], familiarity.Outputs(z["f"], z["logits"], z["midlevel"])
        if cached is not None:
            y, got = cached
        else:
            x, y = data.load_arrays([f for f, _ in files], [label for _, label in files], f"{desc} {src}", scorer.size)
            got = scorer.outputs(x)
            if kept is not None:
                kept.parent.mkdir(parents=True, exist_ok=True)
                # without the middle block's statistics the next run scores again (above)
                if got.midlevel is None:
                    np.savez(kept, y=y, f=got.features, logits=got.logits)
                else:
                    np.savez(kept, y=y, f=got.features, logits=got.logits, midlevel=got.midlevel)
        out[src] = {"y": y, **scorer.apply(got)}
    return out


def _flagged(p: np.ndarray, threshold: float) -> float:
    return float(np.mean(p > threshold))


def foreign_report(scorer: Scorer, test: dict[str, dict], base: Path, threshold: float) -> dict[str, Any]:
    """AUROC and share flagged of each foreign kind against the pooled test split, both methods."""
    kinds = foreign_images(scorer.size)
    kinds["hostile corpus (odd formats of a lesion)"] = hostile_lesions(base, scorer.size)
    report: dict[str, Any] = {"test_images": int(sum(len(t["y"]) for t in test.values())), "kinds": {}}
    for m in scorer.stats.methods:
        inside = np.concatenate([t[m] for t in test.values()])
        report.setdefault("test_flagged", {})[m] = _flagged(inside, threshold)
        report.setdefault("test_flagged_by_source", {})[m] = {s: _flagged(t[m], threshold) for s, t in test.items()}
        clearly = []
        for kind, imgs in kinds.items():
            scored = scorer(np.stack(list(imgs.values())))[m]
            entry = report["kinds"].setdefault(kind, {"images": len(imgs)})
            entry[m] = {
                "auroc": _auroc(inside, scored),
                "flagged": _flagged(scored, threshold),
                "percentiles": {k: round(float(v), 2) for k, v in zip(imgs, scored)},
            }
            if not kind.startswith("hostile"):
                clearly.append(scored)
        foreign = np.concatenate(clearly)
        report.setdefault("clearly_foreign", {"images": len(foreign)})[m] = {
            "auroc": _auroc(inside, foreign),
            "flagged": _flagged(foreign, threshold),
        }
    return report


def loso_report(
    registry: Registry, version: str, data_dirs: tuple[Path, ...], threshold: float, cache: Path | None = None
) -> dict[str, Any]:
    """The left-out source against the training sources' test images: separation, share flagged, and
    the melanoma AUC within familiar and unfamiliar images (at the threshold and at the median)."""
    scorer = Scorer(registry, version)
    parts = split_samples(registry, version, data_dirs)
    test = score_sources(scorer, parts["test"], "LOSO test", cache / version if cache else None)
    external = score_sources(scorer, parts.get("external", []), "LOSO left out", cache / version if cache else None)
    report: dict[str, Any] = {"version": version, "excluded": registry.meta(version).data.get("excluded_sources")}
    for m in scorer.stats.methods:
        inside = np.concatenate([t[m] for t in test.values()])
        r = report.setdefault(m, {"test_flagged": _flagged(inside, threshold), "left_out": {}})
        for src, e in external.items():
            mel = e["y"] == MELANOMA
            median = float(np.median(e[m]))

            def auc(mask: np.ndarray, e: dict = e, mel: np.ndarray = mel) -> dict[str, Any]:
                return {
                    "images": int(mask.sum()),
                    "melanomas": int(mel[mask].sum()),
                    "melanoma_auc": (
                        evaluate.roc_auc(mel[mask], e["probs"][mask, MELANOMA])
                        if 0 < mel[mask].sum() < mask.sum()
                        else None
                    ),
                }

            r["left_out"][src] = {
                "images": len(e["y"]),
                "auroc_vs_test": _auroc(inside, e[m]),
                "flagged": _flagged(e[m], threshold),
                "median_percentile": median,
                "familiar": auc(e[m] <= threshold),
                "unfamiliar": auc(e[m] > threshold),
                "below_median": auc(e[m] <= median),
                "above_median": auc(e[m] > median),
            }
    return report


def cost(registry: Registry, version: str, rounds: int = 5, batches: int = 8) -> dict[str, Any]:
    """Model images/s of the worker's compiled call with and without the familiarity score, alternating."""
    from melanoma.ml.predict import Predictor

    class Without(Predictor):
        def _familiarity(self, version: str, model: Any) -> tuple[None, Any, str]:
            return None, model, "off for the benchmark"

    with_, without = Predictor(registry, batch_size=32), Without(registry, batch_size=32)
    with_.load(version)
    without.load(version)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, *with_.input_size, 3), dtype=np.uint8)
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for name, p in (("without", without), ("with", with_)):
            p.assess(x)
            t0 = time.perf_counter()
            for _ in range(batches):
                p.assess(x)
            rates[name].append(batches * len(x) / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"images_per_s": med, "rounds": rates, "cost": 1 - med["with"] / med["without"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version", type=Path, help="a version folder with familiarity.npz")
    ap.add_argument("--data", type=Path, action="append", required=True, help="the folders it was trained from")
    ap.add_argument("--loso", type=Path, default=None, help="a leave-one-source-out version folder")
    ap.add_argument("--threshold", type=float, default=99.0)
    ap.add_argument("--out", type=Path, default=Path("docs/bench/familiarity"))
    ap.add_argument("--cache", type=Path, default=None, help="keep the split's features here for reruns")
    args = ap.parse_args()
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    data_dirs = tuple(args.data)
    registry, version = Registry(args.version.resolve().parent), args.version.resolve().name
    scorer = Scorer(registry, version)
    parts = split_samples(registry, version, data_dirs)
    test = score_sources(scorer, parts["test"], "test", args.cache / version if args.cache else None)
    base = next(s.path for s in parts["test"] if s.label_index == MELANOMA)
    result: dict[str, Any] = {
        "version": version,
        "threshold_percentile": args.threshold,
        "foreign": foreign_report(scorer, test, base, args.threshold),
        "cost": cost(registry, version),
    }
    if args.loso:
        result["loso"] = loso_report(
            Registry(args.loso.resolve().parent), args.loso.resolve().name, data_dirs, args.threshold, args.cache
        )
    result["method"] = scorer.stats.method
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(modelcard.familiarity_section(result)))
    card = registry.path(version) / "MODEL_CARD.md"
    if card.is_file():
        registry.add_file(version, "MODEL_CARD.md", modelcard.with_familiarity(card.read_text(), result).encode())
    print(json.dumps({k: v for k, v in result["foreign"].items() if k != "kinds"}, indent=1))
    print(json.dumps(result["cost"]["images_per_s"]), json.dumps(result.get("loso", {}), indent=1)[:3000])


if __name__ == "__main__":
    main()
