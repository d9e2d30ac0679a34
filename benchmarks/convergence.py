"""DiffWave vs PriorGrad convergence: same network, data, seed and budget (REFERENCE §2 claims).

Trains a standard-prior and a PriorGrad model (and the same pair at a smaller width, the paper's
small-network claim) on a preprocessed data folder, validating every ``--valid-every`` steps with
6-step fast sampling (log-mel L1 and MR-STFT on the held-out clips, EMA weights). Writes
``OUT/convergence.json``, ``OUT/convergence.png`` and prints a one-line summary per width:
"PriorGrad reaches DiffWave's final log-mel L1 at step N of M".

    python benchmarks/convergence.py --data data/speech --preset cpu -o benchmarks/results/convergence_cpu
    python benchmarks/convergence.py --data data/speech --preset gpu --device cuda -o benchmarks/results/convergence_gpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PRESETS = {
    # CPU: about 25 minutes on 2 cores (4 runs, two at a time with one thread each).
    "cpu": {"model": {"residual_channels": 32, "residual_layers": 10, "dilation_cycle": 10},
            "small": {"residual_channels": 16, "residual_layers": 10, "dilation_cycle": 10},
            "data": {"crop_frames": 24, "valid_clips": 4, "valid_seconds": 1.0},
            "train": {"batch_size": 4, "max_steps": 1200, "valid_every": 150, "learning_rate": 1e-3}},
    # GPU: the paper's BASE network and batch; ≥ 20k steps when the budget allows.
    "gpu": {"model": {"residual_channels": 64, "residual_layers": 30, "dilation_cycle": 10},
            "small": {"residual_channels": 32, "residual_layers": 30, "dilation_cycle": 10},
            "data": {"crop_frames": 62, "valid_clips": 8, "valid_seconds": 2.0, "num_workers": 3},
            "train": {"batch_size": 16, "max_steps": 20000, "valid_every": 1000, "learning_rate": 2e-4}},
}


def run_config(preset: str, prior: str, width: str, data: str, seed: int) -> dict:
    p = PRESETS[preset]
    model = dict(p["model"] if width == "base" else p["small"])
    return {"audio": {"preset": "hifigan"}, "model": model, "diffusion": {"preset": "t50"},
            "prior": {"kind": prior}, "data": {"path": data, **p["data"]},
            "train": {**p["train"], "seed": seed, "save_every": p["train"]["max_steps"], "log_every": 50,
                      "valid_steps": 6, "audio_log_clips": 1}}


def first_reach(curve: list[dict], key: str, target: float) -> int | None:
    for row in curve:
        if row[key] <= target:
            return row["step"]
    return None


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results["runs"].items():
        steps = [c["step"] for c in r["curve"]]
        style = "-" if r["prior"] == "priorgrad" else "--"
        for ax, key in zip(axes, ("log_mel_l1", "mr_stft")):
            ax.plot(steps, [c[key] for c in r["curve"]], style, marker="o", ms=3,
                    label=f"{'PriorGrad' if r['prior'] == 'priorgrad' else 'DiffWave'} C={r['channels']}")
    for ax, key in zip(axes, ("validation log-mel L1 (6 steps)", "validation MR-STFT (6 steps)")):
        ax.set_xlabel("training step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"DiffWave vs PriorGrad, same network/data/seed ({results['meta']['preset']} preset)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder written by `diffvoc preprocess`")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--widths", nargs="+", default=["base", "small"], choices=["base", "small"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds of training per run")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(prior, width) for width in args.widths for prior in ("standard", "priorgrad")]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(args.threads))
    procs: list[tuple[str, str, subprocess.Popen]] = []
    t0 = time.time()
    pending = list(jobs)
    while pending or procs:
        while pending and len(procs) < args.parallel:
            prior, width = pending.pop(0)
            cfg = run_config(args.preset, prior, width, str(Path(args.data).resolve()), args.seed)
            if args.max_steps:
                cfg["train"]["max_steps"] = args.max_steps
                cfg["train"]["save_every"] = args.max_steps
            run = out / f"{prior}_{width}"
            run.mkdir(exist_ok=True)
            (run / "valid.jsonl").unlink(missing_ok=True)
            (run / "run.yaml").write_text(yaml.safe_dump(cfg))
            cmd = [sys.executable, "-m", "diffvoc.cli", "train", str(run / "run.yaml"), "--run-dir", str(run),
                   "--quiet", "--device", args.device]
            if args.time_limit:
                cmd += ["--time-limit", str(args.time_limit)]
            log = open(run / "train.log", "w")
            procs.append((prior, width, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {prior}/{width}", flush=True)
        time.sleep(2)
        for item in list(procs):
            if item[2].poll() is not None:
                procs.remove(item)
                print(f"finished {item[0]}/{item[1]} (exit {item[2].returncode}) at {time.time() - t0:.0f} s", flush=True)
                if item[2].returncode != 0:
                    raise SystemExit((out / f"{item[0]}_{item[1]}" / "train.log").read_text()[-3000:])

    results = {"meta": {"preset": args.preset, "device": args.device, "seed": args.seed, "data": str(args.data),
                        "wall_s": round(time.time() - t0, 1), "validation": "EMA weights, 6-step fast sampling "
                        "[1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5], fixed noise, held-out clips",
                        "command": " ".join(["benchmarks/convergence.py"] + sys.argv[1:])}, "runs": {}, "summary": []}
    for prior, width in jobs:
        run = out / f"{prior}_{width}"
        curve = [json.loads(l) for l in (run / "valid.jsonl").read_text().splitlines() if l.strip()]
        cfg = yaml.safe_load((run / "run.yaml").read_text())
        results["runs"][f"{prior}_{width}"] = {"prior": prior, "width": width,
                                               "channels": cfg["model"]["residual_channels"], "curve": curve}
    for width in args.widths:
        dw, pg = results["runs"][f"standard_{width}"], results["runs"][f"priorgrad_{width}"]
        for key in ("log_mel_l1", "mr_stft"):
            target = dw["curve"][-1][key]
            n = first_reach(pg["curve"], key, target)
            m = dw["curve"][-1]["step"]
            line = (f"[{width}, C={dw['channels']}] PriorGrad reaches DiffWave's final {key} ({target:.4f}) "
                    + (f"at step {n} of {m}" if n is not None else f"not within {pg['curve'][-1]['step']} steps")
                    + f"; final PriorGrad {pg['curve'][-1][key]:.4f}")
            results["summary"].append(line)
            print(line)
    (out / "convergence.json").write_text(json.dumps(results, indent=1))
    try:
        plot(results, out / "convergence.png")
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
    print(f"wrote {out / 'convergence.json'}")


if __name__ == "__main__":
    main()
