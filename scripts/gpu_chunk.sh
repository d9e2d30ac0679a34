#!/usr/bin/env bash
# One resumable training chunk of the default model: PriorGrad BASE (recipes/priorgrad_base.yaml) on the
# project's speech corpus, sized for the device tool. A drawn task gets 15 minutes of device time in all,
# the machine's start (1-2 min) included; one command runs at most 10 minutes; what travels (tracked tree +
# carried paths) is at most 64 MiB; at most 8 files of at most 16 MiB (64 MiB in all) come back from $OUT,
# named in letters, digits, '.', '_' and '-'. So: one chunk per task, one command per chunk.
#
# 1. Here, on the CPU machine, before each chunk (RUN_DIR: the run the previous chunk was unpacked into;
#    none for the first chunk):
#        bash scripts/prepare_chunk.sh [RUN_DIR]
#    It makes .gpu/corpus (FLAC), .gpu/run (RUN_DIR's latest checkpoint only) and .whl (wheels the GPU image
#    lacks: librosa, soundfile and their needs), and checks that the tree plus these stay under 64 MiB.
# 2. The device call (one command; BUDGET is the whole command's clock, well inside timeout_s, so the exit
#    trap always packs before the tool's limit):
#        run(command="BUDGET=540 bash scripts/gpu_chunk.sh", carry=[".gpu", ".whl"], timeout_s=600)
#    then give_back at once (a warm machine's idle time counts). Start ~1-2 min + 9 min + transfers fit the
#    15 minutes of device time once; no second machine starts with under 4 minutes left.
# 3. Here, with the folder the files came back to (the reply's files_at):
#        python scripts/unpack_chunk.py FILES_AT RUN_DIR     # checks sha256, restores; refuses a mixed state
#    and the next chunk starts again at 1 with that RUN_DIR.
#
# Rehearsal on a CPU (CI runs it with a tiny model through EXTRA_SET); with no CORPUS it writes a tiny
# synthetic one, so it runs from a fresh clone:
#        DEVICE=cpu BUDGET=60 OUT=$(mktemp -d) bash scripts/gpu_chunk.sh
#
# Against the clock of BUDGET seconds: wheels -> preflight (imports, CUDA, one mel on the device, the run to
# resume loads; fails in seconds) -> preprocess CORPUS -> training to an absolute deadline (BUDGET minus
# PACK_RESERVE, passed as --deadline; the trainer is killed GRACE s after it if it overruns) -> the exit
# trap packs the latest checkpoint into $OUT with scripts/pack_chunk.py whatever happened before: run.tar.NN
# parts of <= 15 MiB (latest checkpoint with EMA, raw weights and Adam state; latest; valid.jsonl;
# config.yaml; this chunk's TensorBoard files), chunk.json (status, steps, steps/s, samples/s, peak memory,
# phase times, sha256 of every part), valid.jsonl and train.log.
#
# Environment (defaults):
#   DEVICE       cuda | cpu (the rehearsal)                          (cuda)
#   BUDGET       seconds for the whole command                        (540)
#   OUT          where the returned files go; the device sets it      (/tmp/out)
#   RECIPE       the recipe of a new run; a resumed run keeps its own config   (recipes/priorgrad_base.yaml)
#   EXTRA_SET    extra overrides "k=v k=v", each passed as --set k=v, last (e.g. a tiny model for CI)
#   CPU_SET      DEVICE=cpu only: overrides before EXTRA_SET (default: a small model, batch 2 x 16 frames, one
#                0.25 s validation clip: a BASE step, validation and its first-call warm-up do not fit in 60 s on
#                a shared 2-core machine). BASE itself, 3 parts of 15 MiB as on the GPU:
#                CPU_SET="train.batch_size=2 data.crop_frames=16 data.valid_clips=1 data.valid_seconds=0.25" BUDGET=180
#   CORPUS       a packed corpus folder                               (.gpu/corpus)
#   RUN          the run to resume; absent means a new run           (.gpu/run)
#   SAVE_EVERY VALID_EVERY NUM_WORKERS JOBS    trainer / preprocessing knobs (cuda: 2000 5000 6 16)
#   PACK_RESERVE GRACE                          seconds kept for stopping and packing (cuda 25, 8; cpu 12, 5)
#   PART_MIB     size of the returned tar parts (15; smaller only to test the splitting)
#   WORK         scratch folder (default: a new one under /tmp, removed at the end unless KEEP_WORK=1)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-540}
OUT=${OUT:-/tmp/out}
RECIPE=${RECIPE:-recipes/priorgrad_base.yaml}
EXTRA_SET=${EXTRA_SET:-}
CORPUS=${CORPUS:-.gpu/corpus}
RUN=${RUN:-.gpu/run}
if [ "$DEVICE" = cuda ]; then
  SAVE_EVERY=${SAVE_EVERY:-2000} VALID_EVERY=${VALID_EVERY:-5000} NUM_WORKERS=${NUM_WORKERS:-6} JOBS=${JOBS:-16}
  PACK_RESERVE=${PACK_RESERVE:-25} GRACE=${GRACE:-8} CPU_SET=""
else  # a small model, only the final validation and save, batch 2 of 16-frame crops, one short validation clip
  SAVE_EVERY=${SAVE_EVERY:-1000000} VALID_EVERY=${VALID_EVERY:-1000000} NUM_WORKERS=${NUM_WORKERS:-0} JOBS=${JOBS:-2}
  PACK_RESERVE=${PACK_RESERVE:-12} GRACE=${GRACE:-5}
  CPU_SET=${CPU_SET-model.residual_channels=16 model.residual_layers=4 model.dilation_cycle=2 train.batch_size=2 \
data.crop_frames=16 data.valid_clips=1 data.valid_seconds=0.25}
fi
abs() { case $1 in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
OUT=$(abs "$OUT") CORPUS=$(abs "$CORPUS") RUN=$(abs "$RUN") RECIPE=$(abs "$RECIPE")
mkdir -p "$OUT" || exit 1
OWN_WORK=
if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_chunk.XXXXXX") || exit 1; OWN_WORK=1; fi
mkdir -p "$WORK/run"
LOG=$WORK/train.log
: > "$LOG"
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
STATUS=started TRAIN_PID= PHASES=
say() { echo "gpu_chunk [$SECONDS s]: $*" | tee -a "$LOG"; }
phase() { PHASES+="\"$1\": $(( SECONDS - $2 )), "; }

finish() {
  local rc=$?
  trap - EXIT
  trap '' TERM INT HUP
  if [ -n "$TRAIN_PID" ] && kill -0 "$TRAIN_PID" 2>/dev/null; then
    say "stopping the trainer (pid $TRAIN_PID)"
    kill -TERM "$TRAIN_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$TRAIN_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$TRAIN_PID" 2>/dev/null
    wait "$TRAIN_PID" 2>/dev/null
    STATUS=interrupted
  fi
  [ "$rc" = 0 ] || [ "$STATUS" != started ] || STATUS=failed
  say "packing ($STATUS) into $OUT"
  local t=$SECONDS
  if ! python3 "$ROOT/scripts/pack_chunk.py" "$WORK/run" "$OUT" --log "$LOG" --part-mib "${PART_MIB:-15}" \
       --info "$WORK/preflight.json" --info "$WORK/train_info.json" \
       --set "status=$STATUS" --set "device=$DEVICE" --set "budget_s=$BUDGET" --set "recipe=${RECIPE#$ROOT/}" \
       --set "extra_set=$EXTRA_SET" --set "cpu_set=$CPU_SET" --set "phases={${PHASES}\"pack_start\": $t}" \
       --set "elapsed_before_pack_s=$t" 2>&1 | tee -a "$LOG"; then
    echo "{\"format\": \"diffvoc-gpu-chunk\", \"version\": 1, \"status\": \"pack-failed\", \"checkpoint\": null}" \
      > "$OUT/chunk.json"
    tail -c 1048576 "$LOG" > "$OUT/train.log"
    [ "$rc" = 0 ] && rc=5
  fi
  echo "---- $OUT"; ls -l "$OUT"
  echo "---- the end of the log"; tail -n 25 "$LOG"
  echo "gpu_chunk: $STATUS after $SECONDS s (budget $BUDGET s)"
  [ -n "$OWN_WORK" ] && [ -z "${KEEP_WORK:-}" ] && rm -rf "$WORK"
  exit "$rc"
}
trap finish EXIT
trap 'say "signal received"; exit 143' TERM INT HUP

say "device $DEVICE, budget $BUDGET s, recipe ${RECIPE#$ROOT/}, run ${RUN#$ROOT/}, corpus ${CORPUS#$ROOT/}"
# ---- wheels (the GPU image lacks librosa, soundfile and their needs; see prepare_chunk.sh)
t=$SECONDS
if [ "${INSTALL_WHEELS:-$([ "$DEVICE" = cuda ] && echo 1)}" = 1 ] && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$ROOT"/.whl/*.whl >>"$LOG" 2>&1 || { STATUS=wheels-failed; say "pip install of .whl failed"; exit 2; }
  export PYTHONPATH=$WORK/site:$PYTHONPATH
fi
phase wheels $t
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  2>&1 | tee -a "$LOG"

# ---- corpus: the packed one, or (rehearsal) a tiny synthetic one
t=$SECONDS
if [ ! -f "$CORPUS/metadata.csv" ]; then
  if [ "$DEVICE" = cuda ]; then
    STATUS=no-corpus; say "no corpus at $CORPUS: run scripts/prepare_chunk.sh on the CPU machine and carry .gpu"; exit 2
  fi
  CORPUS=$WORK/corpus
  python3 "$ROOT/scripts/pack_corpus.py" --synthetic 8 "$CORPUS" 2>&1 | tee -a "$LOG" \
    || { STATUS=corpus-failed; exit 2; }
fi
phase corpus $t

# ---- preflight: fails in seconds on a broken environment, device, corpus or run
t=$SECONDS
STATUS=preflight
DEVICE=$DEVICE RUN=$RUN RECIPE=$RECIPE CORPUS=$CORPUS SETS="$CPU_SET $EXTRA_SET" WORK=$WORK \
  timeout $(( BUDGET - SECONDS - PACK_RESERVE > 120 ? 120 : BUDGET - SECONDS - PACK_RESERVE > 10 ? BUDGET - SECONDS - PACK_RESERVE : 10 )) \
  python3 - 2>&1 <<'PY' | tee -a "$LOG"
import contextlib, hashlib, io, json, os, sys, time
info = {}
def fail(msg):
    print(f"preflight: error: {msg}", flush=True)
    sys.exit(3)
try:
    dev = os.environ["DEVICE"]
    import torch
    info.update(torch=torch.__version__, python=sys.version.split()[0], cpu_threads=torch.get_num_threads())
    if dev == "cuda":
        if not torch.cuda.is_available():
            fail("CUDA is not available")
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda_bf16=torch.cuda.is_bf16_supported())
    import diffvoc.training.trainer  # every training import (tensorboard, librosa, soundfile, safetensors)
    from diffvoc.audio import MelSpectrogram, load_audio
    from diffvoc.checkpoint import load_checkpoint
    from diffvoc.cli import build_parser
    from diffvoc.config import Config
    from diffvoc.data.dataset import discover
    run = os.environ["RUN"]
    if os.path.isfile(os.path.join(run, "latest")):
        ck = load_checkpoint(run, with_train_state=True)
        if ck.train_state is None or ck.raw_weights is None:
            fail(f"{ck.path} holds no training state to resume from")
        cfg, step = ck.config, int(ck.train_state["step"])
        sha = hashlib.sha256((ck.path / "model.safetensors").read_bytes()).hexdigest()
        info["resumed_from"] = {"checkpoint": ck.path.name, "step": step, "model_sha256": sha}
    else:
        cfg, step = Config.load(os.environ["RECIPE"]), 0
        info["resumed_from"] = None
    info["start_step"] = step
    cfg = cfg.with_overrides(os.environ["SETS"].split())
    cfg.save(os.path.join(os.environ["WORK"], "chunk_config.yaml"))  # the audio settings for preprocess
    items, _ = discover(os.environ["CORPUS"])
    info["corpus_items"] = len(items)
    x = load_audio(items[0]["path"], cfg.audio.sample_rate)[: cfg.audio.sample_rate]
    mel = MelSpectrogram(cfg.audio).to(dev)(torch.from_numpy(x).to(dev))
    if not bool(torch.isfinite(mel).all()):
        fail(f"the mel of {items[0]['path']} is not finite")
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["train", "r.yaml", "--run-dir", "r", "--deadline", "1"])
        except SystemExit:
            fail("this diffvoc's `train` has no --deadline")
    info["batch_size"] = cfg.train.batch_size
    print(f"preflight: ok: torch {info['torch']}, {info.get('gpu', 'cpu')}, mel {tuple(mel.shape)} of "
          f"{len(items)} items, {'resuming step %d' % step if step else 'a new run'}", flush=True)
except SystemExit:
    raise
except Exception as e:
    fail(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
finally:
    with open(os.path.join(os.environ["WORK"], "preflight.json"), "w") as f:
        json.dump(info, f)
PY
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && say "preflight timed out"
[ "$rc" = 0 ] || { STATUS=preflight-failed; exit 3; }
phase preflight $t
RESUME=()
[ -f "$RUN/latest" ] && RESUME=(--resume)
if [ ${#RESUME[@]} -gt 0 ]; then  # train in a copy (the carried run stays as it came); its old logs stay behind
  (cd "$RUN" && tar cf - --exclude=./logs .) | (cd "$WORK/run" && tar xf -) || { STATUS=copy-failed; exit 2; }
fi

# ---- preprocess (features of the packed corpus; the energy statistics of a new run)
t=$SECONDS
STATUS=preprocess
timeout $(( BUDGET - SECONDS - PACK_RESERVE - 20 > 5 ? BUDGET - SECONDS - PACK_RESERVE - 20 : 5 )) \
  python3 -m diffvoc.cli preprocess "$CORPUS" -o "$WORK/data" --config "$WORK/chunk_config.yaml" --quiet \
  --jobs "$JOBS" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && say "preprocessing timed out"
[ "$rc" = 0 ] || { STATUS=preprocess-failed; exit 4; }
phase preprocess $t

# ---- train to the deadline
DEADLINE=$(( BUDGET - SECONDS - PACK_RESERVE ))
if [ "$DEADLINE" -lt 10 ]; then STATUS=no-time; say "only $DEADLINE s left for training"; exit 4; fi
ARGS=(train "$RECIPE" --run-dir "$WORK/run" --data "$WORK/data" --device "$DEVICE" --quiet "${RESUME[@]}"
      --set "train.save_every=$SAVE_EVERY" --set "train.valid_every=$VALID_EVERY" --set "data.num_workers=$NUM_WORKERS"
      --deadline "$DEADLINE")
for kv in $CPU_SET $EXTRA_SET; do ARGS+=(--set "$kv"); done
cat > "$WORK/train_wrapper.py" <<'PY'
"""diffvoc train, plus what the chunk summary needs: the train loop's own timing and the peak memory."""
import json, os, resource, signal, sys, time

t0 = time.time()
info, loop = {}, {}


def _stop(*_):  # SIGTERM (the deadline's backstop): end like Ctrl-C, so the summary below is written
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _stop)
try:
    import diffvoc.training.trainer as T

    _step = T.Trainer.train_step

    def train_step(self, *a, **k):
        out = _step(self, *a, **k)
        now = time.time()
        if not loop:
            c = self.cfg
            loop.update(first_t=now, first_step=self.step)
            info.update(batch_size=c.train.batch_size, crop_frames=c.data.crop_frames,
                        hop_length=c.audio.hop_length, sample_rate=c.audio.sample_rate,
                        first_step_after_s=round(now - t0, 2))
        loop.update(last_t=now, last_step=self.step)
        return out

    T.Trainer.train_step = train_step
except Exception as e:
    info["wrapper_note"] = f"no step timing ({type(e).__name__}: {e})"
from diffvoc.cli import main

rc = 1
try:
    rc = main(sys.argv[1:])
finally:
    info["trainer_seconds"] = round(time.time() - t0, 2)
    if loop:
        info["loop"] = {"steps": loop["last_step"] - loop["first_step"], "seconds": round(loop["last_t"] - loop["first_t"], 3)}
    info["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            info["peak_cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            info["peak_cuda_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    except Exception:
        pass
    info["trainer_rc"] = rc
    with open(os.environ["CHUNK_TRAIN_INFO"], "w") as f:
        json.dump(info, f)
sys.stdout.flush()
sys.stderr.flush()
os._exit(rc)  # the run is saved and closed: skip the interpreter's (and CUDA's) slow teardown
PY
t=$SECONDS
STATUS=training
say "training for at most $DEADLINE s: ${ARGS[*]}"
CHUNK_TRAIN_INFO=$WORK/train_info.json timeout -k 4 $(( DEADLINE + GRACE )) \
  python3 "$WORK/train_wrapper.py" "${ARGS[@]}" >>"$LOG" 2>&1 &
TRAIN_PID=$!
wait "$TRAIN_PID"
TRAIN_RC=$?
TRAIN_PID=
phase train $t
case $TRAIN_RC in
  0) STATUS=trained ;;
  124|137) if grep -qs '"trainer_rc": 0' "$WORK/train_info.json"; then STATUS=trained TRAIN_RC=0  # killed after it saved
           else STATUS=deadline-killed; say "the trainer overran its deadline and was killed"; fi ;;
  *) STATUS=train-failed; say "the trainer exited with status $TRAIN_RC" ;;
esac
[ "$TRAIN_RC" = 0 ] || exit 5
exit 0
