# syntax=docker/dockerfile:1
# One image for every service (producer, worker, trainer); the command picks the service.
#   CPU:  docker build -t melanoma-scoring:cpu .
#   GPU:  docker build -t melanoma-scoring:gpu --build-arg VARIANT=cuda \
#           --build-arg BASE_IMAGE=nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04 .
# The GPU variant runs on NVIDIA's CUDA 12.5 + cuDNN 9 runtime (what TensorFlow 2.21 is built
# against); the host needs the NVIDIA driver and the NVIDIA container toolkit.
# Offline build (no package index reachable): put wheels in a folder of the build context and
#   --build-arg WHEELHOUSE=that/folder --build-arg OFFLINE=1   (tests/containers/run.sh does this).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
# CUDA bases come without Python 3.11: take the distribution's. Python bases skip this.
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS build
# Marks this stage's image, which a local build keeps untagged (tests/containers/run.sh removes old ones).
LABEL melanoma-scoring.stage="build"
ARG VARIANT=cpu
ARG WHEELHOUSE=wheelhouse
ARG OFFLINE=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes.
# The versions are pinned in pyproject.toml, which pip reads here.
COPY ${WHEELHOUSE}/ /tmp/wheelhouse/
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN mkdir -p melanoma worker producer trainer \
    && touch melanoma/__init__.py worker/__init__.py producer/__init__.py trainer/__init__.py \
    && pip install --find-links /tmp/wheelhouse ${OFFLINE:+--no-index} ".[${VARIANT},pretrained]" \
    && pip uninstall -y melanoma-scoring

COPY melanoma ./melanoma
COPY worker ./worker
COPY producer ./producer
COPY trainer ./trainer
# hadolint ignore=DL3013
RUN pip install --no-deps --find-links /tmp/wheelhouse ${OFFLINE:+--no-index} . \
    && pip uninstall -y pip \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && find /opt/venv -path '*/site-packages/tensorflow/include' -prune -exec rm -rf {} +
# (TensorFlow's C++ headers, ~290 MB, only serve to compile custom ops.)

FROM base AS runtime
LABEL org.opencontainers.image.title="melanoma-scoring" \
      org.opencontainers.image.description="Batch scoring of dermoscopic images: producer, worker, trainer and results viewer"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MELANOMA_MODEL_DIR=/app/models \
    MELANOMA_ALLOWED_ROOTS=/data \
    MELANOMA_DATABASE_URL=sqlite:////app/var/melanoma.db \
    MELANOMA_CACHE_DIR=/app/var/cache
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/var/cache /data /cache \
    && chown app:app /app /app/var /app/var/cache /cache
COPY --from=build /opt/venv /opt/venv
COPY --chown=app:app models /app/models
COPY --chown=app:app samples /app/samples
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["melanoma"]
CMD ["worker"]
