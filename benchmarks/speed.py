"""Vocoding speed and peak memory: diffvoc vs lmnt-com/diffwave 0.1.7 with the same weights, same run.

Every measurement runs in a fresh subprocess (so peak RSS is that measurement's own), the two
implementations alternate, and each cell is the median of ``--reps`` runs. Before timing, the
fp32 outputs of both are compared on the same noise (lmnt's sampler order).

    python benchmarks/speed.py --durations 1 5 --steps 2 6 --reps 3 --threads 2 -o benchmarks/results/speed_cpu.json

Needs ``pip install --no-deps diffwave==0.1.7`` (its torchaudio import is stubbed; it is not used).
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_weights(path: Path) -> None:
    """Random BASE weights in lmnt's format (the output layer non-zero, so outputs are non-trivial)."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    from diffwave.model import DiffWave
    from diffwave.params import params

    torch.manual_seed(0)
    net = DiffWave(params)
    for p in net.parameters():
        p.data.normal_(0, 0.02)
    torch.save({"model": net.state_dict(), "params": dict(params), "step": 0}, path)


def worker(args: argparse.Namespace) -> None:
    """Time one (impl, seconds, steps) cell ``reps`` times; print JSON."""
    import resource

    torch.set_num_threads(args.threads)
    frames = int(round(args.seconds * 22050 / 256))
    mel = torch.rand(80, frames, generator=torch.Generator().manual_seed(1)) * 0.8
    betas = {2: [1e-4, 0.5], 6: [1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5]}[args.steps]
    if args.impl == "lmnt":
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        import diffwave.inference as inf

        def run():
            return inf.predict(mel, model_dir=args.weights, device=torch.device(args.device), fast_sampling=True,
                               params={"inference_noise_schedule": betas})[0]
    else:
        from diffvoc.vocoder import Vocoder

        v = Vocoder.from_pretrained(args.weights, device=args.device)

        def run():
            return v.vocode(mel.numpy(), schedule=betas, seed=0)

    run()  # warm-up (lmnt builds its model on the first call)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        run()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_rss_mb": peak_mb}))


def equivalence(weights: str) -> float:
    """Max |diffvoc − lmnt| of 6-step fp32 sampling on the same noise, 1 s of audio."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import diffwave.inference as inf

    from diffvoc.sampler import GlobalNoise
    from diffvoc.vocoder import Vocoder

    mel = torch.rand(80, 86, generator=torch.Generator().manual_seed(1)) * 0.8
    inf.predict(mel, model_dir=weights, device=torch.device("cpu"), fast_sampling=True)
    torch.manual_seed(3)
    ref = inf.predict(mel, model_dir=weights, device=torch.device("cpu"), fast_sampling=True)[0][0].numpy()
    v = Vocoder.from_pretrained(weights)
    torch.manual_seed(3)
    ours = v.vocode(mel.numpy(), steps=6, noise=GlobalNoise(), chunk_frames=0)
    return float(np.abs(ours - ref).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", type=float, nargs="+", default=[1, 5])
    ap.add_argument("--steps", type=int, nargs="+", default=[6])
    ap.add_argument("--impls", nargs="+", default=["diffvoc", "lmnt"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lmnt-max-seconds", type=float, default=5.0, help="skip lmnt above this length (it is slow)")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.steps = args.steps[0]
        return worker(args)

    tmp = Path(tempfile.mkdtemp())
    weights = str(tmp / "weights.pt")
    make_weights(Path(weights))
    max_err = equivalence(weights)
    print(f"fp32 equivalence, 6 steps, 1 s, same noise: max |diffvoc - lmnt| = {max_err:.2e}")
    cells = [(s, k, impl) for s in args.durations for k in args.steps for impl in args.impls
             if not (impl == "lmnt" and s > args.lmnt_max_seconds)]
    results: dict[tuple, dict] = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for rep in range(args.reps):  # alternate implementations and sizes within each round
        for s, k, impl in cells:
            cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--seconds", str(s), "--steps", str(k),
                   "--weights", weights, "--reps", "1", "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            cell = results.setdefault((s, k, impl), {"times": [], "peak_rss_mb": 0.0})
            cell["times"] += r["times"]
            cell["peak_rss_mb"] = max(cell["peak_rss_mb"], r["peak_rss_mb"])
    rows = []
    print(f"\n{'audio s':>7} {'steps':>5} {'impl':>8} {'median s':>9} {'RTF':>7} {'peak MB':>8} {'lmnt/diffvoc':>12}")
    for (s, k, impl), cell in sorted(results.items()):
        med = statistics.median(cell["times"])
        ratio = None
        if impl == "diffvoc" and (s, k, "lmnt") in results:
            ratio = statistics.median(results[(s, k, "lmnt")]["times"]) / med
        rows.append({"seconds": s, "steps": k, "impl": impl, "median_s": med, "rtf": med / s, "times": cell["times"],
                     "peak_rss_mb": cell["peak_rss_mb"], "speedup_vs_lmnt": ratio})
        print(f"{s:7.1f} {k:5d} {impl:>8} {med:9.3f} {med / s:7.3f} {cell['peak_rss_mb']:8.0f} "
              f"{'' if ratio is None else f'{ratio:.2f}x':>12}")
    meta = {"device": args.device, "threads": args.threads, "precision": "fp32", "reps": args.reps,
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "equivalence_max_abs_diff": max_err, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
