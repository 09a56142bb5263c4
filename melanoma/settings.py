"""All settings, read once from environment variables (prefix ``MELANOMA_``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _default_model_dir() -> Path:
    # Running from a checkout (or an image that copies it), the shipped models/ sits beside
    # the package; an installed copy elsewhere falls back to ./models.
    shipped = REPO_ROOT / "models"
    return shipped if shipped.is_dir() else Path.cwd() / "models"


def _cpus() -> int:
    """CPUs this process may run on (its affinity mask, which container CPU sets restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _number(env: dict[str, str], name: str, default, minimum, kind: type):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    return _number(env, name, default, minimum, int)


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float)


# Keras dtype policies for inference: float32 everywhere, or 16-bit compute with float32
# weights and outputs (float16 for NVIDIA tensor cores, bfloat16 for CPUs with AVX512-BF16/AMX).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


# Test-time augmentation: average the probabilities over 1 (off), 4 (flips) or 8 (flips and
# quarter turns) views of each image.
TTA_VIEWS = ("0", "4", "8")


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of every service. Build it with :func:`get_settings`."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = ""
    model_dir: Path = field(default_factory=_default_model_dir)
    allowed_roots: tuple[Path, ...] = ()
    queue: str = "melanoma"
    batch_size: int = 32
    batch_wait: float = 0.2
    prefetch_multiplier: int = 0
    visibility_timeout: int = 3600
    max_image_pixels: int = 50_000_000
    max_file_bytes: int = 100 * 1024 * 1024
    tf_threads: int = 0
    enqueue_chunk: int = 1000
    images_per_message: int = 8
    precision: str = "float32"
    tta: int = 0
    heartbeat: int = 10
    metrics_port: int = 0
    decode_threads: int = field(default_factory=lambda: _cpus())

    @property
    def messages_per_batch(self) -> int:
        """Messages in one worker batch: four model batches' worth of images, so per-batch costs
        are shared and the next model batch can be decoded while this one runs."""
        return messages_per_batch(self.batch_size, self.images_per_message)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``)."""
        env = dict(os.environ if env is None else env)
        cwd = Path.cwd()
        # Passwords may come from secret files so that they never sit in the environment.
        database_url = _with_password(
            env.get("MELANOMA_DATABASE_URL") or f"sqlite:///{cwd / 'var' / 'melanoma.db'}",
            _secret(env, "MELANOMA_DATABASE_PASSWORD"),
        )
        broker_url = _with_password(
            env.get("MELANOMA_BROKER_URL") or cls.broker_url, _secret(env, "MELANOMA_BROKER_PASSWORD")
        )
        model_dir = Path(env["MELANOMA_MODEL_DIR"]) if env.get("MELANOMA_MODEL_DIR") else _default_model_dir()
        roots_raw = env.get("MELANOMA_ALLOWED_ROOTS", "")
        roots = tuple(Path(p).expanduser().resolve() for p in roots_raw.split(os.pathsep) if p.strip())
        batch_size = _int(env, "MELANOMA_BATCH_SIZE", 32)
        per_message = _int(env, "MELANOMA_IMAGES_PER_MESSAGE", 8)
        return cls(
            broker_url=broker_url,
            database_url=database_url,
            model_dir=model_dir.expanduser().resolve(),
            allowed_roots=roots or (cwd.resolve(),),
            queue=env.get("MELANOMA_QUEUE") or cls.queue,
            batch_size=batch_size,
            batch_wait=_float(env, "MELANOMA_BATCH_WAIT", 0.2),
            # Messages reserved ahead: two worker batches (one being scored, the next filling).
            prefetch_multiplier=_int(env, "MELANOMA_PREFETCH", 2 * messages_per_batch(batch_size, per_message)),
            visibility_timeout=_int(env, "MELANOMA_VISIBILITY_TIMEOUT", 3600),
            max_image_pixels=_int(env, "MELANOMA_MAX_IMAGE_PIXELS", 50_000_000),
            max_file_bytes=_int(env, "MELANOMA_MAX_FILE_BYTES", 100 * 1024 * 1024),
            tf_threads=_int(env, "MELANOMA_TF_THREADS", 0, minimum=0),
            enqueue_chunk=_int(env, "MELANOMA_ENQUEUE_CHUNK", 1000),
            images_per_message=per_message,
            precision=_choice(env, "MELANOMA_PRECISION", "float32", PRECISIONS),
            tta=int(_choice(env, "MELANOMA_TTA", "0", TTA_VIEWS)),
            heartbeat=_int(env, "MELANOMA_HEARTBEAT", 10),
            metrics_port=_int(env, "MELANOMA_METRICS_PORT", 0, minimum=0),
            decode_threads=_int(env, "MELANOMA_DECODE_THREADS", _cpus()),
        )

    @property
    def reclaim_after(self) -> int:
        """Seconds after which an unacknowledged message that no live worker claims is put back:
        three missed heartbeats."""
        return 3 * self.heartbeat

    @property
    def lost_after(self) -> int:
        """Seconds a row may stay pending, while the broker holds none of the queue's messages,
        before it is queued again (melanoma.recovery.requeue_lost): two reclaim periods, at most
        one visibility timeout."""
        return min(self.visibility_timeout, max(60, 2 * self.reclaim_after))

    def redacted_database_url(self) -> str:
        """The database URL with any password masked, for messages and logs."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)


def messages_per_batch(batch_size: int, images_per_message: int) -> int:
    """See :attr:`Settings.messages_per_batch`."""
    return max(1, 4 * batch_size // images_per_message)


def _secret(env: dict[str, str], name: str) -> str | None:
    """The content of the file named by ``<name>_FILE`` (a Docker/Kubernetes secret), if set."""
    path = env.get(name + "_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def _with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` (percent-encoded) in its user part, when one is given."""
    if not password:
        return url
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.hostname:
        raise SettingsError(f"cannot add a password to a URL without a host: {url!r}")
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings.from_env()
