#!/usr/bin/env bash
# One resumable GPU training chunk of the default model (PriorGrad BASE on the project's speech corpus).
#
# Prepared on the CPU machine (no GPU time spent on it):
#   diffvoc corpus speech data/corpus                     # 60 min, 29 voices
#   python scripts/pack_corpus.py data/corpus .gpu/corpus --max-mb 44   # FLAC subset that fits the 64 MiB carry
#   pip download (see the device README) librosa soundfile soxr cffi pycparser audioread pooch decorator platformdirs -d .whl
# Run on the GPU machine from the repository root, carrying .gpu and .whl:
#   bash scripts/gpu_chunk.sh [SECONDS]         # default 1380 s of training (a 25-minute budget with start-up)
# The first chunk starts a run; later chunks resume from .gpu/run (put the previous chunk's run folder there).
# The run folder comes back under $OUT as tar pieces of at most 15 MB (the device returns files of <= 16 MB):
#   cat pg_run.tar.part-* | tar xf - -C .gpu
set -euo pipefail
SECONDS_BUDGET=${1:-1380}
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m diffvoc.cli preprocess .gpu/corpus -o /tmp/data --quiet --jobs 16
RESUME=()
[ -f .gpu/run/latest ] && RESUME=(--resume)
PYTHONUNBUFFERED=1 python3 -m diffvoc.cli train recipes/priorgrad_base.yaml --run-dir .gpu/run --data /tmp/data \
  --device cuda --time-limit "$SECONDS_BUDGET" --quiet "${RESUME[@]}" \
  --set train.save_every=2000 --set train.valid_every=2000 --set data.num_workers=6 2>&1 | tee "$OUT/train.log"
tar cf - -C .gpu run | split -b 15m - "$OUT/pg_run.tar.part-"
cp .gpu/run/valid.jsonl "$OUT/" 2>/dev/null || true
