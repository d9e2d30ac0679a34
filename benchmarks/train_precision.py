"""Does training in bf16 (the fast CPU engine's default) learn as well as fp32?

Trains the same small PriorGrad model on the same data with the fast engine in fp32 and in bf16,
for each of ``--seeds`` (the seed sets the initial weights, the batches and the diffusion noise),
and compares the validation diffusion loss and the log-mel L1 / MR-STFT of fast sampling after
``--steps`` steps. The run-to-run noise is the spread between seeds at the same precision; bf16
passes when its difference to fp32 at the same seed lies within that spread.

    python benchmarks/train_precision.py --data data/speech --steps 300 -o benchmarks/results/train_precision_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import ROOT, finished, train  # noqa: E402

METRICS = ("loss", "log_mel_l1", "mr_stft")


def config(data: str, seed: int, precision: str, steps: int) -> dict:
    return {"model": {"residual_channels": 32, "residual_layers": 10, "dilation_cycle": 10},
            "prior": {"kind": "priorgrad"},
            "data": {"path": data, "crop_frames": 24, "valid_clips": 4, "valid_seconds": 1.0, "num_workers": 0},
            "train": {"batch_size": 4, "learning_rate": 1e-3, "max_steps": steps, "valid_every": steps // 3,
                      "save_every": steps, "log_every": 50, "seed": seed, "engine": "fast", "precision": precision}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a preprocessed corpus (diffvoc preprocess)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default="runs/train_precision", help="where the training runs go (reused)")
    ap.add_argument("-o", "--output", default="benchmarks/results/train_precision_cpu.json")
    args = ap.parse_args()
    out = Path(args.runs)
    final: dict[str, dict[int, dict]] = {"fp32": {}, "bf16": {}}
    curves: dict[str, list] = {}
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):  # one at a time: the metrics, not the time, are compared
            name = f"{precision}_seed{seed}"
            cfg = config(args.data, seed, precision, args.steps)
            run = out / name
            if not finished(run, cfg, args.steps, None):
                p = train(run, cfg, "cpu", args.threads, None)
                if p.wait() != 0:
                    sys.exit(f"training {name} failed; see {run / 'train.log'}")
            rows = [json.loads(l) for l in (run / "valid.jsonl").read_text().splitlines() if l.strip()]
            curves[name] = rows
            final[precision][seed] = rows[-1]
            print(f"{name}: " + ", ".join(f"{k} {rows[-1][k]:.4f}" for k in METRICS), file=sys.stderr)
    summary = {}
    for k in METRICS:
        fp = np.array([final["fp32"][s][k] for s in args.seeds])
        bf = np.array([final["bf16"][s][k] for s in args.seeds])
        seed_spread = float(max(np.ptp(fp), np.ptp(bf)))  # run-to-run noise at equal precision
        diff = bf - fp  # same seed, other precision
        summary[k] = {"fp32": fp.tolist(), "bf16": bf.tolist(), "bf16_minus_fp32": diff.tolist(),
                      "seed_spread": seed_spread, "within_noise": bool(np.all(np.abs(diff) <= seed_spread))}
    print(f"\nafter {args.steps} steps (C=32, L=10, PriorGrad, batch 4 x 24 frames), seeds {args.seeds}:")
    print("| metric | fp32 | bf16 | bf16 − fp32 (same seed) | spread between seeds | within noise |")
    print("|---|---|---|---|---|---|")
    for k, v in summary.items():
        print(f"| {k} | {', '.join(f'{x:.4f}' for x in v['fp32'])} | {', '.join(f'{x:.4f}' for x in v['bf16'])} | "
              f"{', '.join(f'{x:+.4f}' for x in v['bf16_minus_fp32'])} | {v['seed_spread']:.4f} | {v['within_noise']} |")
    res = {"command": "python " + " ".join([str(Path(__file__).relative_to(ROOT))] + sys.argv[1:]),
           "steps": args.steps, "seeds": args.seeds, "summary": summary, "curves": curves}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
