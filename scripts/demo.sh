#!/usr/bin/env bash
# Install diffvoc and run the demo: TTS engines speak a few sentences, the bundled model vocodes them
# at 2 and 6 steps, and an HTML report with the metrics is written (its path is printed).
# Usage: bash scripts/demo.sh [diffvoc demo args...]   e.g.  bash scripts/demo.sh my.wav -o out
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng) >/dev/null 2>&1 \
      || echo "warning: could not install the TTS engines; pass your own wav files" >&2
  fi
fi
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[metrics]"
exec $PY -m diffvoc.cli demo "$@"
