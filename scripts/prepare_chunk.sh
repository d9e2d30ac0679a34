#!/usr/bin/env bash
# Prepare one GPU chunk's carry here, on the CPU machine, and check that it fits (see scripts/gpu_chunk.sh):
#
#     bash scripts/prepare_chunk.sh [RUN_DIR]
#
#   .gpu/corpus  a FLAC subset of data/mixed (if present) or data/corpus (or CORPUS_SRC): the valid split and as
#                many training utterances, in a fixed order, as fit. Made once and then kept, so every chunk
#                trains on the same audio (REPACK=1 remakes it). Its cap leaves room for a resumable run of the
#                recipe (EMA + raw weights + Adam moments: 16 bytes a parameter, 42 MB for BASE), so the same
#                corpus also fits the later chunks.
#   .gpu/run     RUN_DIR's latest checkpoint (only that one), latest, valid.jsonl and config.yaml: what the chunk
#                resumes. Without RUN_DIR it is removed and the chunk starts a new run.
#   .whl         wheels the GPU image lacks (KINDS.md: librosa, soundfile and their needs), at the versions
#                installed here, for CPython 3.12 on manylinux x86-64 (pip download; needs the registry here).
#
# Then it checks what travels — tracked and untracked-not-ignored files, .gpu and .whl — against the 64 MiB
# limit with MARGIN_MIB (default 2) to spare, and prints the device call:
#     run(command="BUDGET=540 bash scripts/gpu_chunk.sh", carry=[".gpu", ".whl"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RECIPE=${RECIPE:-recipes/priorgrad_base.yaml}
MARGIN_MIB=${MARGIN_MIB:-2}
RUN_DIR=${1:-}
mkdir -p .gpu
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
for d in /.gpu/ /.whl/; do  # they travel only as carried paths
  git check-ignore -q "${d#/}x" 2>/dev/null || grep -qsxF "$d" "$EXCLUDE" || echo "$d" >> "$EXCLUDE"
done

# ---- wheels
WHEELS="librosa soundfile soxr audioread pooch decorator platformdirs cffi pycparser"
PINS=$($PY - $WHEELS <<'PY'
import importlib.metadata as m, sys
print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))
PY
)
missing=()
for pin in $PINS; do
  name=${pin%%==*} ver=${pin##*==}
  compgen -G ".whl/${name}-${ver}-*.whl" >/dev/null || missing+=("$pin")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "prepare_chunk: downloading ${missing[*]}"
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${missing[@]}"
fi
for pin in $PINS; do  # one version of each: two stop the install there
  name=${pin%%==*} ver=${pin##*==}
  for w in .whl/"$name"-*.whl; do [[ $w == .whl/"$name-$ver"-* ]] || rm -f "$w"; done
done

# ---- the run to resume
rm -rf .gpu/run.new
if [ -n "$RUN_DIR" ]; then
  [ -f "$RUN_DIR/latest" ] || { echo "prepare_chunk: error: $RUN_DIR has no latest (not a run directory)" >&2; exit 1; }
  ck=$(tr -d '[:space:]' < "$RUN_DIR/latest")
  [ -f "$RUN_DIR/$ck/train_state.json" ] || { echo "prepare_chunk: error: $RUN_DIR/$ck holds no training state" >&2; exit 1; }
  mkdir -p .gpu/run.new
  cp -r "$RUN_DIR/$ck" .gpu/run.new/
  cp "$RUN_DIR/latest" .gpu/run.new/
  for f in valid.jsonl config.yaml; do [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" .gpu/run.new/; done
fi
rm -rf .gpu/run
[ -d .gpu/run.new ] && mv .gpu/run.new .gpu/run

# ---- sizes: what travels without the corpus, and the corpus cap
read -r TREE WHL RUNB RESERVE <<<"$($PY - "$RECIPE" <<'PY'
import os, subprocess, sys
files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True, check=True).stdout
tree = sum(os.path.getsize(f) for f in files.decode().split("\0") if f and os.path.isfile(f))
def du(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs) if os.path.isdir(d) else 0
sys.path.insert(0, "src")
from diffvoc.build import build
from diffvoc.config import Config
model, _, _ = build(Config.load(sys.argv[1]), {"energy_min": 0.1, "energy_max": 4.0})
reserve = 16 * sum(p.numel() for p in model.parameters()) + 200_000  # EMA + raw + 2 Adam moments, fp32
print(tree, du(".whl"), du(".gpu/run"), max(reserve, du(".gpu/run")))
PY
)"
LIMIT=$(( (64 - MARGIN_MIB) * 1048576 ))
if [ ! -f .gpu/corpus/metadata.csv ] || [ -n "${REPACK:-}" ]; then
  SRC=${CORPUS_SRC:-}
  [ -z "$SRC" ] && { [ -f data/mixed/metadata.csv ] && SRC=data/mixed || SRC=data/corpus; }
  [ -f "$SRC/metadata.csv" ] || { echo "prepare_chunk: error: no corpus at $SRC; make one: diffvoc corpus speech data/corpus" >&2; exit 1; }
  CAP=$(( LIMIT - TREE - WHL - RESERVE ))
  [ "$CAP" -gt 1000000 ] || { echo "prepare_chunk: error: only $CAP bytes left for the corpus" >&2; exit 1; }
  rm -rf .gpu/corpus.new .gpu/corpus
  $PY scripts/pack_corpus.py "$SRC" .gpu/corpus.new --splits valid --max-mb "$(( CAP / 1000 ))e-3"
  mv .gpu/corpus.new .gpu/corpus
fi
CORP=$($PY -c 'import os,sys; print(sum(os.path.getsize(os.path.join(r,f)) for r,_,fs in os.walk(".gpu/corpus") for f in fs))')
OTHER=$($PY -c 'import os; print(sum(os.path.getsize(os.path.join(r,f)) for r,_,fs in os.walk(".gpu") for f in fs))')
TOTAL=$(( TREE + WHL + OTHER ))
mib() { awk "BEGIN {printf \"%.1f MiB\", $1 / 1048576}"; }
echo "prepare_chunk: tree $(mib "$TREE") + .whl $(mib "$WHL") + .gpu $(mib "$OTHER") (corpus $(mib "$CORP"), run $(mib "$RUNB")) = $(mib "$TOTAL") of 64 MiB"
if [ "$TOTAL" -gt "$LIMIT" ]; then
  echo "prepare_chunk: error: over $(mib "$LIMIT") (64 MiB less MARGIN_MIB=$MARGIN_MIB): REPACK=1 with a smaller corpus" >&2
  exit 1
fi
[ -d .gpu/run ] && echo "prepare_chunk: the chunk resumes $(cat .gpu/run/latest) of $RUN_DIR" || echo "prepare_chunk: the chunk starts a new run"
echo 'next: run(command="BUDGET=540 bash scripts/gpu_chunk.sh", carry=[".gpu", ".whl"], timeout_s=600)'
