"""Vocoding speed and peak memory: diffvoc (fast engine, fp32 and bf16) vs lmnt-com/diffwave 0.1.7
with the same weights, in the same run.

Every measurement runs in a fresh subprocess (so its peak RSS, ``VmHWM``, is that measurement's
own), the implementations alternate, and each cell is the median of ``--reps`` runs. Before timing,
the fp32 outputs of diffvoc and lmnt are compared on the same noise (lmnt's sampler order), and the
bf16 path's quality cost is measured as MR-STFT(fp32 output, bf16 output) with the bundled model.
``--malloc glibc tcmalloc`` repeats cells with ``LD_PRELOAD=libtcmalloc_minimal.so.4``
(``apt-get install libtcmalloc-minimal4``) for the durations in ``--malloc-durations``.

    python benchmarks/speed.py --durations 1 5 30 --steps 2 6 --reps 3 --threads 2 --streaming -o benchmarks/results/speed_cpu.json

``--streaming`` adds :meth:`Vocoder.stream`'s first-chunk latency (look-ahead frames and compute time)
and its real-time factor; ``--durations`` with no value runs only that (and the equivalence checks).

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
        from diffvoc.inference.vocoder import Vocoder

        precision, engine = {"diffvoc": ("fp32", "reference"), "fp32": ("fp32", "fast"),
                             "bf16": ("bf16", "fast")}[args.impl]
        v = Vocoder.from_pretrained(args.weights, device=args.device, precision=precision, engine=engine)

        def run():
            return v.vocode(mel.numpy(), schedule=betas, seed=0)

    rss_loaded = _rss_mb()
    run()  # warm-up (lmnt builds its model on the first call)
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        run()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # VmHWM: this process image's own peak RSS (ru_maxrss would carry the parent's peak over fork+exec)
    peak_mb = _rss_mb("VmHWM:")
    print(json.dumps({"times": times, "peak_rss_mb": peak_mb, "rss_loaded_mb": rss_loaded}))


def _rss_mb(field: str = "VmRSS:") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


TCMALLOC = ["/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4"]


def bf16_quality(seconds: float = 3.0) -> dict:
    """MR-STFT between the fp32 and bf16 outputs of the bundled model on the same noise (and, for
    scale, between two fp32 outputs with different noise seeds)."""
    from diffvoc.evaluation.metrics import mr_stft
    from diffvoc.inference.vocoder import Vocoder

    v32 = Vocoder.from_pretrained(precision="fp32")
    v16 = Vocoder.from_pretrained(precision="bf16")
    sr = v32.sample_rate
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))
    ph = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * ph) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    wav = (0.3 * wav).astype(np.float32)
    wav = np.pad(wav, (0, -len(wav) % v32.hop))
    mel = v32.mel(wav)
    out = {}
    for k in (2, 6):
        a = v32.vocode(mel, steps=k, seed=0)
        b = v16.vocode(mel, steps=k, seed=0)
        c = v32.vocode(mel, steps=k, seed=1)
        out[f"{k}_steps"] = {"mr_stft_fp32_vs_bf16": float(mr_stft(a, b)), "mr_stft_fp32_seed0_vs_seed1": float(mr_stft(a, c)),
                             "mr_stft_input_vs_fp32": float(mr_stft(wav, a)), "mr_stft_input_vs_bf16": float(mr_stft(wav, b)),
                             "max_abs_fp32_vs_bf16": float(np.abs(a - b).max())}
    return out


def streaming(weights: str, steps: int, precision: str, seconds: float = 5.0, block: int = 4,
              chunk: int = 64) -> dict:
    """First-chunk latency and throughput of :meth:`Vocoder.stream`: mel frames arrive ``block`` at a
    time (as a TTS model emits them, here instantly); reported are the frames that had to arrive
    before the first audio came out (the look-ahead: chunk + receptive-field context + fade), the
    compute time from the start to the first audio, and the whole stream's real-time factor."""
    from diffvoc.inference.vocoder import Vocoder

    v = Vocoder.from_pretrained(weights, precision=precision)
    frames = int(round(seconds * v.sample_rate / v.hop))
    mel = (torch.rand(80, frames, generator=torch.Generator().manual_seed(1)) * 0.8).numpy()
    list(v.stream([mel[:, :chunk * 2]], steps=steps, chunk_frames=chunk))  # warm-up
    fed = 0

    def blocks():
        nonlocal fed
        for i in range(0, frames, block):
            fed = min(frames, i + block)
            yield mel[:, i:i + block]

    t0 = time.perf_counter()
    first, first_frames, n = None, None, 0
    for out in v.stream(blocks(), steps=steps, chunk_frames=chunk):
        if first is None:
            first, first_frames = time.perf_counter() - t0, fed
        n += len(out)
    total = time.perf_counter() - t0
    return {"steps": steps, "precision": precision, "chunk_frames": chunk, "block_frames": block,
            "lookahead_frames": first_frames, "lookahead_s": first_frames * v.hop / v.sample_rate,
            "first_chunk_compute_s": first, "stream_rtf": total / (n / v.sample_rate)}


def equivalence(weights: str) -> float:
    """Max |diffvoc − lmnt| of 6-step fp32 sampling on the same noise, 1 s of audio."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import diffwave.inference as inf

    from diffvoc.diffusion.noise import GlobalNoise
    from diffvoc.inference.vocoder import Vocoder

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
    ap.add_argument("--durations", type=float, nargs="*", default=[1, 5])
    ap.add_argument("--streaming", action="store_true",
                    help="also measure Vocoder.stream: first-chunk latency and RTF (5 s, blocks of 4 frames)")
    ap.add_argument("--steps", type=int, nargs="+", default=[6])
    ap.add_argument("--impls", nargs="+", default=["fp32", "bf16", "lmnt"],
                    help="fp32 / bf16: diffvoc's fast engine; diffvoc: its reference network; lmnt")
    ap.add_argument("--malloc", nargs="+", default=["glibc"], choices=["glibc", "tcmalloc"])
    ap.add_argument("--malloc-durations", type=float, nargs="+", default=None,
                    help="durations also run under tcmalloc (default: all)")
    ap.add_argument("--memory-seconds", type=float, default=None,
                    help="also one run of fp32 and bf16 at this length and 2 steps, for peak memory")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lmnt-max-seconds", type=float, default=5.0, help="skip lmnt above this length (it is slow)")
    ap.add_argument("--no-quality", action="store_true", help="skip the bf16 quality measurement")
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
    quality = None if args.no_quality else bf16_quality()
    if quality:
        print("bf16 quality (bundled model, 3 s): " + json.dumps(quality))
    tc = next((p for p in TCMALLOC if Path(p).exists()), None)
    mallocs = [m for m in args.malloc if m == "glibc" or tc]
    if "tcmalloc" in args.malloc and not tc:
        print("tcmalloc not found (apt-get install libtcmalloc-minimal4): skipping it")
    cells = [(s, k, impl, m) for s in args.durations for k in args.steps for impl in args.impls for m in mallocs
             if not (impl == "lmnt" and s > args.lmnt_max_seconds)
             and not (m == "tcmalloc" and args.malloc_durations and s not in args.malloc_durations)]
    if args.memory_seconds:
        cells += [(args.memory_seconds, 2, impl, "glibc") for impl in args.impls if impl != "lmnt"]
    results: dict[tuple, dict] = {}
    base_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for rep in range(args.reps):  # alternate implementations and sizes within each round
        for s, k, impl, m in cells:
            if args.memory_seconds and s == args.memory_seconds and k == 2 and rep > 0 \
                    and s not in args.durations:
                continue  # the memory-only cell runs once
            env = dict(base_env)
            if m == "tcmalloc":
                env["LD_PRELOAD"] = tc
            cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--seconds", str(s), "--steps", str(k),
                   "--weights", weights, "--reps", "1", "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            cell = results.setdefault((s, k, impl, m), {"times": [], "peak_rss_mb": 0.0, "rss_loaded_mb": 0.0})
            cell["times"] += r["times"]
            cell["peak_rss_mb"] = max(cell["peak_rss_mb"], r["peak_rss_mb"])
            cell["rss_loaded_mb"] = max(cell["rss_loaded_mb"], r["rss_loaded_mb"])
            print(f"  round {rep + 1}: {s:g} s, {k} steps, {impl}, {m}: {r['times'][0]:.2f} s, "
                  f"peak {r['peak_rss_mb']:.0f} MB", flush=True)
    rows = []
    print(f"\n{'audio s':>7} {'steps':>5} {'impl':>8} {'malloc':>8} {'median s':>9} {'RTF':>7} {'peak MB':>8} "
          f"{'lmnt/this':>9}")
    for (s, k, impl, m), cell in sorted(results.items()):
        med = statistics.median(cell["times"])
        ratio = None
        if impl != "lmnt" and (s, k, "lmnt", m) in results:
            ratio = statistics.median(results[(s, k, "lmnt", m)]["times"]) / med
        rows.append({"seconds": s, "steps": k, "impl": impl, "malloc": m, "median_s": med, "rtf": med / s,
                     "times": cell["times"], "peak_rss_mb": cell["peak_rss_mb"],
                     "rss_after_load_mb": cell["rss_loaded_mb"], "speedup_vs_lmnt": ratio})
        print(f"{s:7.1f} {k:5d} {impl:>8} {m:>8} {med:9.3f} {med / s:7.3f} {cell['peak_rss_mb']:8.0f} "
              f"{'' if ratio is None else f'{ratio:.2f}x':>9}")
    stream_rows = []
    if args.streaming:
        torch.set_num_threads(args.threads)
        print(f"\nstreaming (chunk 64 frames, blocks of 4 frames): {'precision':>9} {'steps':>5} {'look-ahead':>11} "
              f"{'first chunk s':>13} {'stream RTF':>10}")
        for precision in [p for p in ("bf16", "fp32") if p in args.impls]:
            for k in args.steps:
                r = streaming(weights, k, precision)
                stream_rows.append(r)
                print(f"{'':>49}{precision:>9} {k:5d} {r['lookahead_frames']:5d} fr {r['lookahead_s']:4.2f}s "
                      f"{r['first_chunk_compute_s']:13.3f} {r['stream_rtf']:10.3f}")
    meta = {"device": args.device, "threads": args.threads, "reps": args.reps, "bf16_quality": quality,
            "load_average_at_end": os.getloadavg(),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "equivalence_max_abs_diff": max_err, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"meta": meta, "rows": rows, "streaming": stream_rows}, indent=1))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
