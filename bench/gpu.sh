#!/usr/bin/env bash
# The throughput benchmark on a machine with GPUs: one worker per GPU (CUDA_VISIBLE_DEVICES),
# larger model batches (the workers get the ceiling's best), full TensorFlow with CUDA, in
# float32 and in mixed float16 (tensor cores). The code path is the one tested on CPU.
#   usage: bench/gpu.sh [NUMBER_OF_GPUS] [extra bench.throughput args]
# Results: runs/bench-gpu/float32/ and runs/bench-gpu/mixed_float16/ (throughput.txt, .json), and
# runs/bench-gpu/sizes/ (the same at 180–224 px, 600×450 and full size: on a GPU, decoding is the
# bottleneck, so every worker decodes on MELANOMA_DECODE_THREADS threads, by default its CPUs;
# MELANOMA_MODEL_CALLS model calls (default 2) are in flight at once, so that one batch's copy to
# the card can overlap another's compute: unmeasured on a GPU; set it to 1 for a run to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
export MELANOMA_VENV="${MELANOMA_VENV:-$PWD/.venv-gpu}"  # full TensorFlow, apart from the CPU venv
source scripts/lib.sh
GPUS="${1:-$(nvidia-smi -L 2>/dev/null | wc -l)}"; shift || true
[ "$GPUS" -ge 1 ] || die "no GPU found (nvidia-smi -L lists none)"
ensure_venv gpu
ensure_redis
ensure_postgres
for precision in float32 mixed_float16; do
  log "GPU benchmark, $precision"
  "$PY" -m bench.throughput --gpus "$GPUS" --workers "1,$GPUS" --batch-sizes 64,128,256,512 \
    --precision "$precision" --images 20000 --out "runs/bench-gpu/$precision" "$@"
done
log "GPU benchmark by image size (decode threads: ${MELANOMA_DECODE_THREADS:-all CPUs}, model calls at once: ${MELANOMA_MODEL_CALLS:-2})"
"$PY" -m bench.sizes --batch-size 128 --images 2000 --out runs/bench-gpu/sizes
