"""All settings, read once from environment variables (prefix ``MELANOMA_``) by one
pydantic-settings class: types, ranges and choices are checked there, and each default lives in
one place. ``python -m melanoma.core.settings`` prints the README's table of them."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from melanoma.core.errors import UserError
from melanoma.core.passwords import read_secret, with_password

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "MELANOMA_"
# MELANOMA_TTA_SCALES's range: beyond it a lesion's apparent size is far from any training's zoom.
TTA_SCALE_RANGE = (0.5, 2.0)


class SettingsError(UserError, ValueError):
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


# Keras dtype policies for inference: float32 everywhere, or 16-bit compute with float32
# weights and outputs (float16 for NVIDIA tensor cores, bfloat16 for CPUs with AVX512-BF16/AMX).
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]


def _doc(default: str, meaning: str) -> dict[str, Any]:
    # The README table shows defaults computed at start-up (CPU count, current folder) in words.
    return {"description": meaning, "json_schema_extra": {"shown_default": default}}


class Settings(BaseSettings):
    """Runtime configuration of every service. Build it with :func:`get_settings`
    (the environment) or :meth:`from_env` (a given mapping)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, env_ignore_empty=True, extra="ignore")

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        **_doc("`redis://127.0.0.1:6379/0`", "Celery broker (Redis; `redis://:password@host:6379/0`)"),
    )
    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'var' / 'melanoma.db'}",
        **_doc("`sqlite:///./var/melanoma.db`", "SQLAlchemy URL; PostgreSQL: `postgresql+psycopg://user:pw@host/db`"),
    )
    model_dir: Path = Field(default_factory=_default_model_dir, **_doc("the repo's `models/`", "model registry folder"))
    allowed_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        default_factory=lambda: (Path.cwd().resolve(),),
        **_doc("current folder", "folders workers may read images from (`:`-separated)"),
    )
    batch_size: int = Field(
        32, ge=1, **_doc("`32`", "images per model call (the compiled batch shape); a worker batch is four of them")
    )
    batch_wait: float = Field(
        0.2, ge=0, **_doc("`0.2`", "seconds a worker waits to fill a batch (not after a job's last message)")
    )
    prefetch: int | None = Field(None, ge=1, **_doc("two worker batches", "messages a worker process reserves ahead"))
    queue: str = Field("melanoma", min_length=1, **_doc("`melanoma`", "queue name"))
    visibility_timeout: int = Field(
        3600, ge=1, **_doc("`3600`", "seconds before Redis re-delivers an unacknowledged message")
    )
    max_image_pixels: int = Field(
        50_000_000, ge=1, **_doc("`50000000`", "larger images get an error row (decompression bombs)")
    )
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1, **_doc("`104857600`", "larger files get an error row"))
    tf_threads: int = Field(
        0, ge=0, **_doc("`0` (TensorFlow decides)", "TensorFlow intra-op threads per worker process")
    )
    enqueue_chunk: int = Field(1000, ge=1, **_doc("`1000`", "images per Redis round trip when submitting"))
    images_per_message: int = Field(8, ge=1, **_doc("`8`", "images per queue message"))
    precision: Precision = Field(
        "float32",
        **_doc(
            "`float32`",
            "inference compute precision: `mixed_float16` on NVIDIA GPUs with tensor cores, `mixed_bfloat16` on "
            "CPUs with AVX512-BF16 or AMX (weights and outputs stay float32; probabilities move by up to ~0.05, "
            "see docs/performance.md)",
        ),
    )
    tta: Literal[0, 4, 8] = Field(
        0,
        **_doc(
            "`0`",
            "test-time augmentation: `4` averages the probabilities over the image and its three flips, `8` adds "
            "the transposed views (4× / 8× the model's work; see docs/model.md)",
        ),
    )
    tta_scales: Annotated[
        tuple[Annotated[float, Field(ge=TTA_SCALE_RANGE[0], le=TTA_SCALE_RANGE[1])], ...], NoDecode
    ] = Field(
        (1.0,),
        **_doc(
            "`1`", "scales each image is scored at, probabilities averaged (`1,1.18`: 2.4× the work, docs/model.md)"
        ),
    )
    unfamiliar_percentile: float = Field(
        99.0, ge=0, le=100, **_doc("`99`", "an image is `unfamiliar` above this familiarity percentile (docs/model.md)")
    )
    unfamiliar_warn_share: float = Field(
        0.1, ge=0, le=1, **_doc("`0.1`", "jobs warn when more than this share of their images is unfamiliar")
    )
    site: str | None = Field(None, max_length=100, **_doc("unset", "the clinic jobs are filed under (docs/reviews.md)"))
    review_gate_min_cases: int = Field(
        20, ge=1, **_doc("`20`", "a site's confirmed cases the promotion gate needs to compare versions on them")
    )
    decode_threads: int = Field(
        default_factory=_cpus,
        ge=1,
        **_doc(
            "CPUs the worker may use", "threads decoding images in parallel while the model scores the previous batch"
        ),
    )
    model_calls: int = Field(
        2,
        ge=1,
        le=8,
        **_doc(
            "`2`",
            "model calls in flight at once per worker process: on CPU, TensorFlow leaves cores idle between one "
            "call's layers and a second call fills them (see docs/performance.md); `1` runs them one after another",
        ),
    )
    heartbeat: int = Field(
        10,
        ge=1,
        **_doc(
            "`10`",
            "seconds between a worker's heartbeats; a dead worker's messages are put back after three missed "
            "heartbeats (see docs/operations.md)",
        ),
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        **_doc(
            "unset (off)", "port on which each worker serves Prometheus metrics at `/metrics` (see docs/operations.md)"
        ),
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path.cwd() / "var" / "cache",
        **_doc("`./var/cache`", "where the viewer keeps the thumbnails and previews it makes (by content hash)"),
    )
    web_password_file: Path | None = Field(
        None,
        **_doc(
            "unset",
            "the viewer's password file (basic auth, or `Bearer` to read); needed off loopback and to record "
            "diagnoses (basic auth, user name = reviewer)",
        ),
    )
    database_password_file: Path | None = Field(
        None,
        **_doc(
            "unset",
            "file holding the database password (a Docker/Kubernetes secret), added to `MELANOMA_DATABASE_URL`",
        ),
    )
    broker_password_file: Path | None = Field(
        None, **_doc("unset", "file holding the Redis password, added to `MELANOMA_BROKER_URL`")
    )

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [p for p in value.split(os.pathsep) if p.strip()]
        return tuple(Path(p).expanduser().resolve() for p in value) or (Path.cwd().resolve(),)

    @field_validator("model_dir", "cache_dir")
    @classmethod
    def _resolve(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("tta_scales", mode="before")
    @classmethod
    def _split_scales(cls, value: Any) -> Any:
        return value.split(",") if isinstance(value, str) else value

    @field_validator("tta_scales")
    @classmethod
    def _with_scale_one(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if 1.0 not in value:
            raise ValueError("scales must include 1 (the image as decoded)")
        return tuple(sorted(set(value)))

    @field_validator("tta", mode="before")
    @classmethod
    def _tta_number(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @model_validator(mode="after")
    def _add_passwords(self) -> Settings:
        # Passwords may come from secret files so that they never sit in the environment; the
        # frozen model is completed here, once, while it is being built.
        for url, secret in (("database_url", "database_password_file"), ("broker_url", "broker_password_file")):
            password = read_secret(getattr(self, secret), f"{ENV_PREFIX}{secret.upper()}")
            self.__dict__[url] = with_password(getattr(self, url), password)
        return self

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: ``os.environ``); a bad value raises one
        :class:`SettingsError` line naming the variable."""
        try:
            if env is None:
                return cls()
            values = {
                name: env[key]
                for name in cls.model_fields
                if (key := f"{ENV_PREFIX}{name.upper()}") in env and env[key] != ""
            }
            # model_validate, unlike the constructor, reads nothing but the given values.
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc)) from None

    @property
    def messages_per_batch(self) -> int:
        """Messages in one worker batch: four model batches' worth of images, so per-batch costs
        are shared and the next model batch can be decoded while this one runs."""
        return messages_per_batch(self.batch_size, self.images_per_message)

    @property
    def prefetch_multiplier(self) -> int:
        """Messages reserved ahead: ``MELANOMA_PREFETCH``, or two worker batches (one being
        scored, the next filling)."""
        return self.prefetch or 2 * self.messages_per_batch

    @property
    def reclaim_after(self) -> int:
        """Seconds after which an unacknowledged message that no live worker claims is put back:
        three missed heartbeats."""
        return 3 * self.heartbeat

    @property
    def lost_after(self) -> int:
        """Seconds a row may stay pending, while the broker holds none of the queue's messages,
        before it is queued again (melanoma.pipeline.recovery.requeue_lost): two reclaim periods, at most
        one visibility timeout."""
        return min(self.visibility_timeout, max(60, 2 * self.reclaim_after))

    def redacted_database_url(self) -> str:
        """The database URL with any password masked, for messages and logs."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)

    def redacted_broker_url(self) -> str:
        """The broker URL with any password replaced by ``**``, for messages and logs."""
        parts = urlsplit(self.broker_url)
        if parts.password is None:
            return self.broker_url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:" if parts.username else ":"
        return urlunsplit(parts._replace(netloc=f"{user}**@{netloc}"))


def messages_per_batch(batch_size: int, images_per_message: int) -> int:
    """See :attr:`Settings.messages_per_batch`."""
    return max(1, 4 * batch_size // images_per_message)


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check over several fields; its message names the variable
            parts.append(msg)
            continue
        got = f", got {err['input']!r}" if isinstance(err.get("input"), str | int | float) else ""
        parts.append(f"{env_name(str(err['loc'][0]))}: {msg}{got}")
    return "; ".join(parts)


def markdown_table() -> str:
    """The README's table of settings, generated from :class:`Settings`."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        rows.append(f"| `{env_name(name)}` | {extra.get('shown_default', '')} | {field.description} |")
    return "\n".join(rows)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings.from_env()


if __name__ == "__main__":
    print(markdown_table())
