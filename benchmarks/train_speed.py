"""Training speed and peak memory: diffvoc's fast engine vs its reference path vs lmnt-com/diffwave
0.1.7, the same network and batch, in one run.

For each preset (``base``: C=64, L=30; ``small``: C=32, L=10) a batch of ``--batch`` crops of
``--frames`` mel frames (default 16 × 62, PriorGrad prior for diffvoc) is trained with:

* ``fast``: the default CPU path (``train.engine fast``, bf16 operands where the CPU has
  AVX512-BF16/AMX, one item per forward/backward pass, gradients accumulated);
* ``fast_fp32``: the fast engine in fp32 (equal to the reference to float rounding);
* ``reference``: the plain module, eager fp32 (the trainer before issue 14);
* ``lmnt``: lmnt-com/diffwave 0.1.7's ``DiffWaveLearner.train_step`` on its own DiffWave with the
  same sizes (L1 loss, standard prior; its torchaudio import is stubbed — unused here);
* ``fast_infer`` / ``fast_tdpm``: the fast path with InferGrad's infer loss on every step (K = 2,
  the config's crop) or with the TDPM GAN phases on every step (the reference network runs those).

Every measurement is a fresh subprocess (its peak RSS, ``VmHWM``, is its own); implementations
alternate within each repetition; a cell is the median over ``--reps`` processes of the median
step time after ``--warmup`` steps.

    python benchmarks/train_speed.py --presets base small --reps 3 -o benchmarks/results/train_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PRESETS = {"base": dict(residual_channels=64, residual_layers=30, dilation_cycle=10),
           "small": dict(residual_channels=32, residual_layers=10, dilation_cycle=10)}
IMPLS = ("fast", "fast_fp32", "reference", "lmnt", "fast_infer", "fast_tdpm")


def make_data(root: Path, clips: int = 24, seconds: float = 2.0) -> Path:
    """A small synthetic harmonic corpus, preprocessed (speed does not depend on the content)."""
    import soundfile as sf

    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import preprocess

    src = root / "wavs"
    src.mkdir(parents=True, exist_ok=True)
    sr = 22050
    rng = np.random.default_rng(0)
    for i in range(clips):
        t = np.arange(int(seconds * sr)) / sr
        f0 = 100 + 8 * i
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        sf.write(src / f"c{i:03d}.wav", (0.2 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32), sr)
    out = root / "data"
    preprocess(src, out, AudioConfig(), jobs=1)
    return out


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _diffvoc_step(args: argparse.Namespace):
    from diffvoc.config import Config
    from diffvoc.training.trainer import Trainer

    engine, precision = {"fast": ("fast", "auto"), "fast_fp32": ("fast", "fp32"), "reference": ("reference", "fp32"),
                         "fast_infer": ("fast", "auto"), "fast_tdpm": ("fast", "auto")}[args.impl]
    d = {"model": PRESETS[args.preset], "prior": {"kind": "priorgrad"},
         "data": {"path": args.data, "crop_frames": args.frames, "valid_clips": 1, "num_workers": 0},
         "train": {"batch_size": args.batch, "engine": engine, "precision": precision, "valid_every": 0,
                   "log_every": 1}}
    if args.impl == "fast_infer":
        d["infer"] = {"enabled": True, "steps": 2}
    if args.impl == "fast_tdpm":
        d["truncation"] = {"enabled": True, "gan_start_step": 0}
    cfg = Config.from_dict(d)
    tr = Trainer(cfg, Path(args.run_dir), device="cpu", progress=False)
    batches = [tr.data[s] for s in range(args.warmup + args.steps)]
    it = iter(batches)
    return lambda: tr.train_step(*next(it)), {"engine": tr.engine, "precision": tr.precision}


def _lmnt_step(args: argparse.Namespace):
    import torch

    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    from diffwave.learner import DiffWaveLearner
    from diffwave.model import DiffWave
    from diffwave.params import AttrDict, params

    from diffvoc.config import AudioConfig
    from diffvoc.data.dataset import CropDataset

    p = AttrDict(dict(params))
    sizes = PRESETS[args.preset]
    p.residual_channels, p.residual_layers = sizes["residual_channels"], sizes["residual_layers"]
    p.dilation_cycle_length = sizes["dilation_cycle"]
    torch.manual_seed(0)
    model = DiffWave(p)
    opt = torch.optim.Adam(model.parameters(), lr=p.learning_rate)
    learner = DiffWaveLearner(args.run_dir, model, None, opt, p, fp16=False)
    data = CropDataset(args.data, AudioConfig(), args.frames, args.batch, seed=0)
    batches = [data[s] for s in range(args.warmup + args.steps)]
    it = iter(batches)

    def step():
        audio, mel, _ = next(it)
        return learner.train_step({"audio": audio, "spectrogram": mel})

    return step, {"engine": "lmnt-com/diffwave 0.1.7", "precision": "fp32"}


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    step, info = _lmnt_step(args) if args.impl == "lmnt" else _diffvoc_step(args)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds_per_step": statistics.median(times), "times": times, "peak_rss_mb": _peak_rss_mb(),
                      **info}))


def run_cell(args: argparse.Namespace, preset: str, impl: str, data: Path) -> dict:
    steps = args.slow_steps if impl in ("reference", "lmnt") and preset == "base" else args.steps
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--impl", impl, "--data", str(data),
               "--run-dir", run_dir, "--batch", str(args.batch), "--frames", str(args.frames),
               "--warmup", str(args.warmup), "--steps", str(steps), "--threads", str(args.threads)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{preset}/{impl} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["base", "small"], choices=sorted(PRESETS))
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--extras-presets", nargs="+", default=["base"], help="presets that get fast_infer/fast_tdpm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=62)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--slow-steps", type=int, default=1, help="timed steps per process for BASE reference/lmnt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=None, help="a preprocessed data folder (default: a synthetic one)")
    ap.add_argument("-o", "--output", default="benchmarks/results/train_speed_cpu.json")
    # worker mode
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else make_data(Path(tmp))
        cells: dict[tuple[str, str], list[dict]] = {}
        jobs = [(p, i) for p in args.presets for i in args.impls
                if not (i.startswith("fast_") and i != "fast_fp32" and p not in args.extras_presets)]
        for rep in range(args.reps):
            for preset, impl in jobs:  # alternate the implementations within each repetition
                res = run_cell(args, preset, impl, data)
                cells.setdefault((preset, impl), []).append(res)
                print(f"rep {rep + 1}/{args.reps} {preset:5s} {impl:10s} {res['seconds_per_step']:8.2f} s/step "
                      f"peak {res['peak_rss_mb']:6.0f} MB", file=sys.stderr, flush=True)
    rows = []
    for (preset, impl), runs in cells.items():
        sps = statistics.median(r["seconds_per_step"] for r in runs)
        rows.append({"preset": preset, "impl": impl, "engine": runs[0]["engine"], "precision": runs[0]["precision"],
                     "seconds_per_step": sps, "samples_per_s": args.batch / sps,
                     "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                     "runs": [r["seconds_per_step"] for r in runs]})
    for preset in args.presets:
        ref = {r["impl"]: r["seconds_per_step"] for r in rows if r["preset"] == preset}
        for r in rows:
            if r["preset"] == preset:
                r["speedup_vs_reference"] = ref.get("reference", float("nan")) / r["seconds_per_step"]
                r["speedup_vs_lmnt"] = ref.get("lmnt", float("nan")) / r["seconds_per_step"]
    print("\n| preset | impl | precision | s/step | samples/s | peak RSS MB | × reference | × lmnt |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['impl']} | {r['precision']} | {r['seconds_per_step']:.2f} | "
              f"{r['samples_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['speedup_vs_reference']:.1f} | "
              f"{r['speedup_vs_lmnt']:.1f} |")
    out = {"command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
           "batch": args.batch, "frames": args.frames, "reps": args.reps, "threads": args.threads,
           "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
           "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.output}")


def _cpu() -> str:
    from diffvoc.io import cpu_name

    return cpu_name()


if __name__ == "__main__":
    main()
