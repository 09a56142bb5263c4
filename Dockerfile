# syntax=docker/dockerfile:1
# One image for every service (producer, worker, trainer); the command picks the service.
#   CPU:  docker build -t melanoma-scoring:cpu .
#   GPU:  docker build -t melanoma-scoring:gpu --build-arg VARIANT=gpu .
# The GPU variant installs TensorFlow with its CUDA libraries from PyPI; the host needs the
# NVIDIA driver and the NVIDIA container toolkit.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG VARIANT=cpu
# Optional folder of wheels inside the build context for offline builds (pip --find-links).
ARG WHEELHOUSE=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes.
# The versions are pinned in pyproject.toml, which pip reads here.
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN mkdir -p melanoma worker producer trainer \
    && touch melanoma/__init__.py worker/__init__.py producer/__init__.py trainer/__init__.py \
    && pip install ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} ".[${VARIANT}]" \
    && pip uninstall -y melanoma-scoring

COPY melanoma ./melanoma
COPY worker ./worker
COPY producer ./producer
COPY trainer ./trainer
# hadolint ignore=DL3013
RUN pip install --no-deps ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="melanoma-scoring" \
      org.opencontainers.image.description="Batch scoring of dermoscopic images: producer, worker and trainer"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MELANOMA_MODEL_DIR=/app/models \
    MELANOMA_ALLOWED_ROOTS=/data \
    MELANOMA_DATABASE_URL=sqlite:////app/var/melanoma.db
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/var /data \
    && chown app:app /app /app/var
COPY --from=build /opt/venv /opt/venv
COPY --chown=app:app models /app/models
COPY --chown=app:app samples /app/samples
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["melanoma"]
CMD ["worker"]
