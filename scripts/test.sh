#!/usr/bin/env bash
# Install diffvoc with everything its tests need, then run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# CPU torch first, so that nothing pulls a CUDA build.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[test,metrics,onnx]"
# lmnt-com/diffwave 0.1.7 for the equivalence tests (its torchaudio dependency is not needed for them).
$PY -m pip install -q --no-deps "diffwave==0.1.7"
# Debian's TTS engines and packages of recorded speech for the corpus tests (root only; skipped tests say
# why if they are missing).
missing=""
for p in $(cat scripts/apt-packages.txt); do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
done
if [ -n "$missing" ] || ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null || ! command -v text2wave >/dev/null || ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(cat scripts/apt-packages.txt)) >/dev/null 2>&1 \
      || echo "warning: could not install the Debian packages of scripts/apt-packages.txt" >&2
  fi
fi
exec $PY -m pytest -q -p no:cacheprovider "$@"
