#!/usr/bin/env bash
# Train the `pretrained` recipe twice on the shared data, in the background-friendly way the README's
# model section describes: on all five sources (the version to ship) and with ISIC 2017 left out (the
# leave-one-source-out figure), both on the shipped robust version's split, so that old and new are
# compared on the same test images. Resumable: run it again after a stop and each run continues.
#   usage: scripts/train-pretrained.sh [DATA_DIR]   (default ../shared/data)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_venv cpu,pretrained
D="${1:-$REPO/../shared/data}"
ALL=(--data "$D/isic-9class/Train" --data "$D/ham10000" --data "$D/ham10000-extra" --data "$D/isic2017" --data "$D/isic-fullres")
SPLIT=(--split-of "$REPO/models/robust-20261128T022748-014a" --val-fraction 0.15 --test-fraction 0.15)
cd "$REPO"
for run in all loso; do
  extra=()
  [ "$run" = loso ] && extra=(--exclude-source isic2017)
  if ls "runs/pretrained-$run"/pretrained-* >/dev/null 2>&1; then log "runs/pretrained-$run: already published"; continue; fi
  resume=()
  [ -f "runs/pretrained-$run/work/epochs.jsonl" ] && resume=(--resume)
  log "training pretrained ($run) into runs/pretrained-$run"
  "$PY" -m melanoma train --recipe pretrained "${ALL[@]}" "${SPLIT[@]}" "${extra[@]}" "${resume[@]}" \
    --model-dir "runs/pretrained-$run" --workdir "runs/pretrained-$run/work" --no-promote
done
