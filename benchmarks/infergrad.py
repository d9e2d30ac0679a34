"""InferGrad benchmark: a base model vs the same model fine-tuned with the infer loss (REFERENCE §3).

1. a base model: ``--base CKPT``, or trained here from scratch for ``base_steps`` steps;
2. two fine-tunes from it with the same data, seed and number of steps (equal training budget):
   ``plain`` (diffusion loss only: the base model's extra steps) and ``infergrad`` (diffusion +
   λ·infer loss, general mode over 2, 3 and 6 steps);
3. for each fine-tuned model and K ∈ {2, 3, 6}: a schedule search (local, on the ``valid`` split,
   written into the model's checkpoint) and evaluation of the default and the searched K-step
   schedule on the ``test`` split (MR-STFT and log-mel L1, REFERENCE §5; EMA weights; fixed noise).

Writes ``OUT/infergrad.json`` (with the command line) and prints the table, plus whether 2-step
InferGrad reaches the plain model's 6-step quality.

    python benchmarks/infergrad.py --data data/speech --preset cpu -o benchmarks/results/infergrad_cpu \
        --json benchmarks/results/infergrad_cpu.json [--base CKPT]
    python benchmarks/infergrad.py --data data/speech --preset gpu --device cuda -o benchmarks/results/infergrad_gpu
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _runs import finished, train, wait  # noqa: E402

STEPS = (2, 3, 6)

PRESETS = {
    # CPU: about 15 minutes on 2 cores: base ≈ 5, fine-tunes ≈ 6, search + test ≈ 4 (the two
    # fine-tunes, and then the two models' searches, run side by side with one thread each).
    "cpu": {"model": {"residual_channels": 16, "residual_layers": 10, "dilation_cycle": 10},
            "data": {"crop_frames": 24, "valid_clips": 3, "valid_seconds": 1.0},
            "train": {"batch_size": 4, "learning_rate": 1e-3},
            "base_steps": 1200, "finetune_steps": 300, "finetune_lr": 5e-4,
            "infer": {"crop_frames": 16, "batch_items": 2},
            "search": {"clips": 2, "seconds": 1.0, "max_evals": 10},
            "test": {"clips": 8, "seconds": 1.5}},
    # smoke: checks the script end to end in about a minute (numbers meaningless).
    "smoke": {"model": {"residual_channels": 8, "residual_layers": 4, "dilation_cycle": 2},
              "data": {"crop_frames": 16, "valid_clips": 1, "valid_seconds": 0.5},
              "train": {"batch_size": 2, "learning_rate": 1e-3},
              "base_steps": 10, "finetune_steps": 4, "finetune_lr": 1e-3,
              "infer": {"crop_frames": 8, "batch_items": 1},
              "search": {"clips": 1, "seconds": 0.5, "max_evals": 2},
              "test": {"clips": 2, "seconds": 0.5}},
    # GPU: the paper's BASE network and batch.
    "gpu": {"model": {"residual_channels": 64, "residual_layers": 30, "dilation_cycle": 10},
            "data": {"crop_frames": 62, "valid_clips": 8, "valid_seconds": 2.0, "num_workers": 3},
            "train": {"batch_size": 16, "learning_rate": 2e-4},
            "base_steps": 20000, "finetune_steps": 5000, "finetune_lr": 1e-4,
            "infer": {"crop_frames": 32, "batch_items": 8},
            "search": {"clips": 8, "seconds": 2.0, "max_evals": 40},
            "test": {"clips": 51, "seconds": 3.0}},
}


def run_config(p: dict, data: str, prior: str, seed: int, steps: int, lr: float, infer: dict | None) -> dict:
    cfg = {"audio": {"preset": "hifigan"}, "model": dict(p["model"]), "diffusion": {"preset": "t50"},
           "prior": {"kind": prior}, "data": {"path": data, **p["data"]},
           "train": {**p["train"], "learning_rate": lr, "seed": seed, "max_steps": steps, "save_every": steps,
                     "valid_every": steps, "log_every": 50, "valid_steps": 6, "audio_log_clips": 1}}
    if infer is not None:
        cfg["infer"] = infer
    return cfg








def evaluate(ckpt: str, schedule: list[float], clips, device: str, seed: int) -> dict:
    """MR-STFT and log-mel L1 (mean and 95% CI over clips) of one schedule on fixed clips and noise."""
    from diffvoc.evaluation.metrics import mean_ci95
    from diffvoc.evaluation.schedule_search import ScheduleObjective
    from diffvoc.inference.vocoder import Vocoder

    voc = Vocoder.from_pretrained(ckpt, device=device)
    per_clip = []
    for i, clip in enumerate(clips):
        ev = ScheduleObjective(voc, [clip], seed + i)(schedule)
        per_clip.append((ev.mr_stft, ev.log_mel_l1))
    mr = mean_ci95([a for a, _ in per_clip])
    l1 = mean_ci95([b for _, b in per_clip])
    return {"schedule": schedule, "mr_stft": mr[0], "mr_stft_ci95": mr[1], "log_mel_l1": l1[0], "log_mel_l1_ci95": l1[1],
            "objective": mr[0] + l1[0], "per_clip": per_clip}


def search_and_evaluate(run: str, data: str, search: dict, test: dict, device: str, threads: int, seed: int) -> dict:
    """For K in 2, 3, 6: search a schedule on the valid split (written into the run's checkpoint) and
    evaluate the default and the searched schedule on the test split. Runs in a worker process."""
    import torch

    from diffvoc.checkpoint import load_checkpoint
    from diffvoc.config import FAST_SCHEDULES
    from diffvoc.data.dataset import load_clips
    from diffvoc.evaluation.schedule_search import search_schedule

    torch.set_num_threads(threads)
    cfg = load_checkpoint(run).config
    clips = load_clips(data, cfg.audio, "test", test["clips"], test["seconds"])
    out = {}
    for k in STEPS:
        default = list(FAST_SCHEDULES[k])
        t = time.time()
        res = search_schedule(run, k, data=data, split="valid", clips=search["clips"], seconds=search["seconds"],
                              method="local", seed=seed, max_evals=search["max_evals"], start=default, device=device)
        out[k] = {"default": evaluate(run, default, clips, device, 1000 + seed),
                  "searched": evaluate(run, res.searched.betas, clips, device, 1000 + seed),
                  "search": {"valid_default": res.default.objective, "valid_searched": res.searched.objective,
                             "evaluations": res.evaluations, "seconds": round(res.seconds, 1)},
                  "seconds": round(time.time() - t, 1)}
        print(f"{Path(run).name}: {k} steps searched and evaluated in {out[k]['seconds']} s", flush=True)
    out["test_clips"] = len(clips)
    return out


def main() -> None:
    from diffvoc.checkpoint import load_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a folder written by `diffvoc preprocess` (valid/test splits used)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--base", default=None, help="start from this checkpoint instead of training a base model")
    ap.add_argument("--prior", choices=["standard", "priorgrad"], default="priorgrad")
    ap.add_argument("--base-steps", type=int, default=None)
    ap.add_argument("--finetune-steps", type=int, default=None)
    ap.add_argument("--weight", type=float, default=None, help="λ of the infer loss (default: the config default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for search/evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="folder for the runs (checkpoints, logs)")
    ap.add_argument("--json", default=None, help="where to write the results (default OUT/infergrad.json)")
    args = ap.parse_args()

    p = PRESETS[args.preset]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.data).resolve())
    t0 = time.time()
    timings: dict[str, float] = {}
    base_steps = args.base_steps or p["base_steps"]
    ft_steps = args.finetune_steps or p["finetune_steps"]

    base = args.base
    if base is None:
        cfg = run_config(p, data, args.prior, args.seed, base_steps, p["train"]["learning_rate"], None)
        if finished(out / "base", cfg, base_steps, None):
            print("reusing the base model trained earlier", flush=True)
        else:
            print(f"training the base model ({base_steps} steps) ...", flush=True)
            wait({"base": train(out / "base", cfg, args.device, 2 if args.device == "cpu" else 1, None)}, out)
        base = str(out / "base")
        log = (out / "base" / "valid.jsonl").read_text().splitlines()
        timings["base_train_s"] = json.loads(log[-1])["time_s"]
    base_cfg = load_checkpoint(base).config
    prior = base_cfg.prior.kind
    model = {"residual_channels": base_cfg.model.residual_channels, "residual_layers": base_cfg.model.residual_layers,
             "dilation_cycle": base_cfg.model.dilation_cycle}
    p = {**p, "model": model}

    # equal budget: the same number of fine-tuning steps, data, seed and learning rate
    infer = {"enabled": True, "mode": "general", "general_steps": list(STEPS), **p["infer"]}
    if args.weight is not None:
        infer["weight"] = args.weight
    t1 = time.time()
    print(f"fine-tuning plain and infergrad from {base} ({ft_steps} steps each) ...", flush=True)
    procs = {}
    for name, inf in (("plain", None), ("infergrad", infer)):
        cfg = run_config(p, data, prior, args.seed + 1, ft_steps, p["finetune_lr"], inf)
        if finished(out / name, cfg, ft_steps, base):
            print(f"reusing {name}, fine-tuned earlier", flush=True)
        else:
            procs[name] = train(out / name, cfg, args.device, 1, base)
    wait(procs, out)
    timings["finetune_wall_s"] = round(time.time() - t1, 1)
    for name in ("plain", "infergrad"):
        log = [json.loads(line) for line in (out / name / "valid.jsonl").read_text().splitlines()]
        timings[f"{name}_train_s"] = log[-1]["time_s"]

    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    t2 = time.time()
    names = ("plain", "infergrad")
    workers = 2 if args.device == "cpu" else 1
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {n: pool.submit(search_and_evaluate, str(out / n), data, p["search"], p["test"], args.device,
                                  max(1, args.threads // workers), args.seed) for n in names}
        results = {n: f.result() for n, f in futures.items()}
    test_clips = results["plain"].pop("test_clips")
    results["infergrad"].pop("test_clips")
    timings["search_and_eval_s"] = round(time.time() - t2, 1)
    timings["total_s"] = round(time.time() - t0, 1)

    # the "searched" schedule was chosen on the valid split (never worse there than the default),
    # so comparing searched schedules on the test split involves no selection on the test clips
    from diffvoc.evaluation.metrics import mean_ci95

    def paired(a: dict, b: dict) -> dict:
        d = [x[0] + x[1] - y[0] - y[1] for x, y in zip(a["per_clip"], b["per_clip"])]
        m, ci = mean_ci95(d)
        return {"mean": m, "ci95": ci}

    ig2, plain6 = results["infergrad"][2]["searched"], results["plain"][6]["searched"]
    summary = {
        "infergrad_2step_searched_objective": ig2["objective"], "plain_6step_searched_objective": plain6["objective"],
        "infergrad_2step_minus_plain_6step_paired": paired(ig2, plain6),
        "infergrad_2step_reaches_plain_6step": ig2["objective"] <= plain6["objective"],
        "infergrad_minus_plain_paired": {f"{k}_{w}": paired(results["infergrad"][k][w], results["plain"][k][w])
                                         for k in STEPS for w in ("default", "searched")},
    }
    record = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "preset": args.preset, "settings": {**p, "base": base, "base_steps": None if args.base else base_steps,
                                            "finetune_steps": ft_steps, "prior": prior, "infer": infer,
                                            "device": args.device, "threads": args.threads,
                                            "test": {**p["test"], "split": "test", "clips_used": test_clips}},
        "metrics": "MR-STFT (sc + log-mag; FFT 1024/2048/512, hop 120/240/50, win 600/1200/240) and log-mel L1 "
                   "(model mel); objective = their sum; EMA weights; fixed noise (PositionalNoise(1000 + seed + i))",
        "timings": timings, "results": results, "summary": summary,
    }
    json_path = Path(args.json) if args.json else out / "infergrad.json"
    json_path.write_text(json.dumps(record, indent=1))

    print(f"\n{'model':10} {'K':>2} {'schedule':9} {'MR-STFT':>15} {'log-mel L1':>15} {'sum':>7}  betas")
    for name in ("plain", "infergrad"):
        for k in STEPS:
            for which in ("default", "searched"):
                r = results[name][k][which]
                print(f"{name:10} {k:2d} {which:9} {r['mr_stft']:7.3f} ± {r['mr_stft_ci95']:5.3f} "
                      f"{r['log_mel_l1']:7.3f} ± {r['log_mel_l1_ci95']:5.3f} {r['objective']:7.3f}  "
                      + ",".join(f"{b:.3g}" for b in r["schedule"]))
    d = summary["infergrad_2step_minus_plain_6step_paired"]
    print(f"\n2-step InferGrad (searched) {ig2['objective']:.3f} vs plain 6-step (searched) {plain6['objective']:.3f}: "
          f"{'reaches' if summary['infergrad_2step_reaches_plain_6step'] else 'does not reach'} it "
          f"(paired difference {d['mean']:+.3f} ± {d['ci95']:.3f})")
    print(f"timings: {timings}; wrote {json_path}")


if __name__ == "__main__":
    main()
