"""Publish and load model versions.

Layout of the registry folder (``MELANOMA_MODEL_DIR``)::

    current                 one line: the version workers use
    <version>/model.keras   the Keras model (outputs logits)
    <version>/metadata.json class list, input size, architecture, recipe, seed, data, git commit
    <version>/metrics.json  validation metrics
    <version>/familiarity.npz   familiarity statistics (melanoma.ml.familiarity), fitted at
                            training or added later with :meth:`Registry.add_file`

A version is written to a hidden temporary folder and renamed into place, and ``current``
is replaced atomically, so a reader never sees half a version.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from melanoma.core.errors import UserError
from melanoma.core.labels import CLASS_NAMES

CURRENT_FILE = "current"
HISTORY_FILE = "history.jsonl"
# A version being written is ".partial~<host>~<pid>~<version>~<random>" until its rename.
PARTIAL_SEP = "~"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
# Image ids of a version's training, validation, test and left-out (external) images.
SPLIT_FILE = "split.json"
FAMILIARITY_FILE = "familiarity.npz"


class RegistryError(UserError):
    """The registry or a version in it is missing or unusable."""


@dataclass
class ModelMeta:
    """What is known about one published model version."""

    version: str
    architecture: str
    classes: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    input_size: list[int] = field(default_factory=lambda: [180, 180, 3])
    created_at: str = ""
    recipe: str = ""
    seed: int | None = None
    git_commit: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Operating point: a row is flagged melanoma when P(melanoma) >= this (chosen on validation
    # to reach target_sensitivity). None for versions made before thresholds existed.
    melanoma_threshold: float | None = None
    target_sensitivity: float | None = None
    # Temperature scaling fitted on validation: probabilities are softmax(logits / temperature).
    temperature: float = 1.0
    # The class a row is given is the highest of probabilities x these weights (melanoma.core.decision),
    # made from the training draws per class to decision_power, fitted on validation. None: the most
    # probable class (versions made before decision weights existed, and the origin recipe).
    decision_weights: list[float] | None = None
    decision_power: float | None = None
    # Pretrained architectures: which EfficientNet-Lite (a stage that continues it builds the same).
    # None for other architectures and for versions recorded before 2026-12-06; an ensemble's
    # members' joined by "+" (lite1+lite0).
    backbone: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def new_version_id(architecture: str) -> str:
    """A sortable, unique version id such as ``origin-20261127T153000-3fa2``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{architecture}-{stamp}-{secrets.token_hex(2)}"


class Registry:
    """A folder of model versions with a pointer to the current one."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"invalid version id {version!r}")
        return self.root / version

    def current(self) -> str | None:
        """The current version id, or None when nothing is published."""
        try:
            text = (self.root / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def versions(self) -> list[ModelMeta]:
        """All complete versions, oldest first."""
        if not self.root.is_dir():
            return []
        metas = []
        for child in self.root.iterdir():
            if child.is_dir() and not child.name.startswith(".") and (child / METADATA_FILE).is_file():
                metas.append(self.meta(child.name))
        return sorted(metas, key=lambda m: (m.created_at, m.version))

    def meta(self, version: str) -> ModelMeta:
        """Metadata of one version, with its metrics."""
        folder = self.path(version)
        try:
            meta = ModelMeta.from_dict(json.loads((folder / METADATA_FILE).read_text()))
        except FileNotFoundError:
            raise RegistryError(f"model version {version!r} not found in {self.root}") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise RegistryError(f"model version {version!r} has unreadable metadata: {exc}") from None
        metrics_path = folder / METRICS_FILE
        if metrics_path.is_file():
            try:
                meta.metrics = json.loads(metrics_path.read_text())
            except json.JSONDecodeError as exc:
                raise RegistryError(f"model version {version!r} has an unreadable {METRICS_FILE}: {exc}") from None
        return meta

    def publish(
        self,
        model_file: str | os.PathLike[str],
        meta: ModelMeta,
        extra_files: dict[str, Path] | None = None,
        make_current: bool = False,
    ) -> Path:
        """Copy a saved model and its metadata into the registry as a new version, atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._clear_abandoned()
        final = self.path(meta.version)
        if final.exists():
            raise RegistryError(f"model version {meta.version!r} already exists")
        meta.created_at = meta.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        prefix = PARTIAL_SEP.join([".partial", socket.gethostname(), str(os.getpid()), meta.version, ""])
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))
        try:
            shutil.copyfile(model_file, tmp / MODEL_FILE)
            body = asdict(meta)
            metrics = body.pop("metrics")
            (tmp / METADATA_FILE).write_text(json.dumps(body, indent=2) + "\n")
            (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
            for name, src in (extra_files or {}).items():
                shutil.copyfile(src, tmp / name)
            for f in tmp.iterdir():
                _fsync(f)
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if make_current:
            self.set_current(meta.version)
        return final

    def add_file(self, version: str, name: str, content: bytes) -> Path:
        """Write (or replace) one file of a published version atomically: a reader sees the old
        file or the new one, never half of it. For statistics fitted after training."""
        folder = self.path(version)
        if not (folder / METADATA_FILE).is_file():
            raise RegistryError(f"model version {version!r} not found in {self.root}")
        if name in (MODEL_FILE, METADATA_FILE) or "/" in name or name.startswith("."):
            raise RegistryError(f"cannot replace {name!r} of a published version")
        _replace_atomically(folder / name, content)
        return folder / name

    def _clear_abandoned(self, max_age_s: float = 86400.0) -> None:
        """Remove temporary folders left by a publisher that died before its rename: those of a
        dead process on this host, and any older than a day (another host's)."""
        now, host = time.time(), socket.gethostname()
        for child in self.root.iterdir():
            if not (child.name.startswith(".") and child.is_dir()):
                continue
            parts = child.name.split(PARTIAL_SEP)
            dead_here = len(parts) >= 4 and parts[1] == host and not _alive(int(parts[2]))
            if dead_here or now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)

    def set_current(self, version: str, reason: str = "promote") -> None:
        """Point ``current`` at ``version`` (which must exist) with one atomic replace, and log it."""
        if not (self.path(version) / MODEL_FILE).is_file():
            raise RegistryError(f"model version {version!r} not found in {self.root}")
        previous = self.current()
        with open(self.root / HISTORY_FILE, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "at": datetime.now(UTC).isoformat(timespec="seconds"),
                        "version": version,
                        "previous": previous,
                        "reason": reason,
                    }
                )
                + "\n"
            )
        _replace_atomically(self.root / CURRENT_FILE, (version + "\n").encode())

    def history(self) -> list[dict[str, Any]]:
        """Every change of the current version, oldest first."""
        try:
            lines = (self.root / HISTORY_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def rollback(self) -> str:
        """Make the version that was current before this one current again; returns it.

        Rolling back twice goes two promotions back, not back and forth.
        """
        stack: list[str] = []
        for entry in self.history():
            if entry.get("reason") == "rollback" and stack:
                stack.pop()
            if not stack or stack[-1] != entry["version"]:
                stack.append(entry["version"])
        if len(stack) < 2 or stack[-1] != self.current():
            raise RegistryError(f"no earlier current version to roll back to from {self.current()!r}")
        self.set_current(stack[-2], reason="rollback")
        return stack[-2]

    def load(self, version: str) -> Any:
        """Load a version's Keras model (imports TensorFlow)."""
        import keras

        import melanoma.ml.layers  # noqa: F401  (registers the custom layers saved models refer to)

        path = self.path(version) / MODEL_FILE
        if not path.is_file():
            raise RegistryError(f"model version {version!r} has no {MODEL_FILE}")
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a broken file
            raise RegistryError(f"model version {version!r} failed to load: {exc}".splitlines()[0]) from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_atomically(path: Path, content: bytes) -> None:
    """Write ``path`` through a hidden temporary file beside it, synced and renamed into place: a
    reader sees the old file or the new one, never half of either."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
